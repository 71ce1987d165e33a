"""IoUCounter's float32 compare gives the float64 formula's counts, even at thresholds between floats."""
import torch
import torch.nn.functional as F

from neuronatlas.describe.netdissect import IoUCounter


def test_float32_compare_matches_float64_formula():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 4, 5, 5, generator=g)
    masks = torch.rand(3, 2, 8, 8, generator=g) > 0.5
    up = F.interpolate(maps, size=(8, 8), mode="bilinear", align_corners=False).to(torch.float64)
    v = up[0, :, 3, 3]
    # thresholds exactly on a pixel value, just below / above it (not float32-representable), and inf
    thr = torch.stack([v[0], v[1] - 1e-12, v[2] + 1e-12, torch.tensor(float("inf"), dtype=torch.float64)])
    counter = IoUCounter(thr, n_concepts=2, mask_size=8)
    counter.update(maps, masks)
    act = up > thr.view(1, -1, 1, 1)
    m = masks.to(torch.float64)
    inter = torch.einsum("buhw,bchw->uc", act.to(torch.float64), m)
    assert torch.equal(counter.inter, inter)
    assert torch.equal(counter.act, act.to(torch.float64).sum((0, 2, 3)))
