"""The pass-2 kernel's float32 compare gives the float64 formula's counts, even at thresholds between
floats (the largest float32 <= each threshold)."""
import torch
import torch.nn.functional as F

from neuronatlas.describe.netdissect_kernel import ActiveCounter, ConceptPatterns, concept_counts


def test_float32_compare_matches_float64_formula():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 4, 5, 5, generator=g)
    masks = torch.rand(3, 2, 8, 8, generator=g) > 0.5
    up = F.interpolate(maps.reshape(-1, 1, 5, 5), size=(8, 8), mode="bilinear",
                       align_corners=False).reshape(3, 4, 8, 8).to(torch.float64)
    v = up[0, :, 3, 3]
    # thresholds exactly on a pixel value, just below / above it (not float32-representable), and inf
    thr = torch.stack([v[0], v[1] - 1e-12, v[2] + 1e-12, torch.tensor(float("inf"), dtype=torch.float64)])
    counter = ActiveCounter(thr, mask_size=8)
    pats = ConceptPatterns(2)
    counter.update(maps, pats.ids(masks))
    inter, act_n, _ = concept_counts(*counter.table(), pats.bits(), pats.counts, 4)
    act = up > thr.view(1, -1, 1, 1)
    m = masks.to(torch.float64)
    assert torch.equal(inter, torch.einsum("buhw,bchw->uc", act.to(torch.float64), m))
    assert torch.equal(act_n, act.to(torch.float64).sum((0, 2, 3)))
