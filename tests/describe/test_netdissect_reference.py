"""NetDissect's kernel against the paper's formula written directly (small inputs): same labels in
the same top-5 order and IoU to 1e-6, on the world with a real architecture and on a Broden-format
folder; the pass-1 histogram against the plain doubling histogram; resume and reuse of the stored
passes; the kernel's buffers and memory budget."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import neuronatlas as na
from neuronatlas.atlas.exemplars import probe_for_run, target_for_run
from neuronatlas.data import iter_batches
from neuronatlas.describe.netdissect import netdissect, probe_concepts
from neuronatlas.describe.netdissect_kernel import (ActiveCounter, ConceptPatterns, DoublingHistogram,
                                                    concept_counts, iou_table, parse_memory)
from neuronatlas.describe.netdissect_passes import concept_masks, whole_image
from neuronatlas.errors import UserError
from neuronatlas.recording.hooks import Capture
from tests.describe.test_netdissect_broden import RGB_MODEL, make_broden


# -- the reference: Bau et al.'s IoU, written directly --------------------------------------------
def all_maps(run, layer):
    """(N, U, h, w) float32 maps of every recorded image (the run's model, re-run)."""
    probe, target = probe_for_run(run), target_for_run(run)
    (point,) = target.select([layer])
    capture = Capture(target, [point], reduce={layer: lambda o: point.layout.spatial_map(
        point.layout.canonical(o)).float()})
    out = []
    with capture.attached():
        # the whole image (no center crop), as netdissect and the reference feed it
        for b in iter_batches(probe, whole_image(target.preprocess).transform(),
                              np.arange(len(probe)), 7, num_workers=0):
            out.append(capture.run(b.pixels, probe, b.indices)[layer])
    return torch.cat(out), probe


def reference_iou(maps, masks, thresholds):
    """IoU(u, c) = sum_i |A_ui & M_ci| / sum_i |A_ui | M_ci|, A_ui = {x : bilinear(map_ui)(x) > T_u},
    each map upsampled on its own, compared in float64."""
    n, units = maps.shape[:2]
    m = masks.shape[-1]
    inter = torch.zeros(units, masks.shape[1], dtype=torch.float64)
    union = torch.zeros_like(inter)
    for u in range(units):
        for i in range(n):
            up = F.interpolate(maps[i, u][None, None], size=(m, m), mode="bilinear",
                               align_corners=False)[0, 0].to(torch.float64)
            a = up > thresholds[u]
            for c in range(masks.shape[1]):
                inter[u, c] += (a & masks[i, c]).sum()
                union[u, c] += (a | masks[i, c]).sum()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))


def check_against_reference(run, layer, df, top, n_units=None):
    maps, probe = all_maps(run, layer)
    maps = maps[:, :n_units]
    concepts = probe_concepts(probe)
    ids = [c[0] for c in concepts]
    m = run.label_config("netdissect")["mask_size"]
    masks = concept_masks(probe, range(len(probe)), ids, m)
    mine = df[df.unit.isin([f"{layer}:{u}" for u in range(maps.shape[1])])]
    thr = torch.tensor(mine.groupby("unit", sort=False)["threshold"].first().to_numpy())
    assert len(thr) == maps.shape[1]
    iou = reference_iou(maps, masks, thr)
    order = torch.argsort(-iou, dim=1, stable=True)[:, :top]
    n_exact = 0
    for u in range(maps.shape[1]):
        got = mine[mine.unit == f"{layer}:{u}"].sort_values("rank")
        assert got["concept"].tolist() == [ids[c] for c in order[u].tolist()], u
        np.testing.assert_allclose(got["score"].to_numpy(), iou[u, order[u]].numpy(), atol=1e-6)
        n_exact += int(np.array_equal(got["score"].to_numpy(), iou[u, order[u]].numpy()))
    assert n_exact == maps.shape[1]  # the same integer counts: identical floats


def test_world_resnet_matches_the_reference(tmp_path):
    torch.set_num_threads(1)
    run = na.record("timm:resnet18", "world:n=20,size=64,seed=3", tmp_path / "run",
                    layers="layer2,layer4", random_weights=True, num_workers=0)
    df = netdissect(run, top=5, batch_size=6, quantile=0.02)
    for layer, units in (("layer2", 12), ("layer4", 6)):
        check_against_reference(run, layer, df, 5, units)


def test_broden_folder_matches_the_reference(tmp_path):
    model = tmp_path / "planes.py"
    model.write_text(RGB_MODEL)
    run = na.record(f"{model}:build", f"broden:{make_broden(tmp_path / 'broden', n=10)}",
                    tmp_path / "run", layers="planes", num_workers=0)
    df = netdissect(run, top=4, quantile=0.05, batch_size=4)
    check_against_reference(run, "planes", df, 4)


# -- pass 1: the same thresholds as the plain doubling histogram -----------------------------------
def plain_histogram_thresholds(batches, bins, q):
    """The doubling histogram written plainly: float64 counts, every unit doubled together."""
    counts = lo = width = None
    half = bins // 2
    for x in batches:
        x = x.to(torch.float64)
        xmin, xmax = x.min(1).values, x.max(1).values
        if lo is None:
            counts = torch.zeros(x.shape[0], bins, dtype=torch.float64)
            span = xmax - xmin
            lo = xmin.clone()
            width = torch.where(span > 0, span * (1 + 1e-9),
                                torch.clamp(xmax.abs() * 1e-6, min=1e-12)) / bins
        while True:
            down, up = xmin < lo, xmax >= lo + bins * width
            grow = down | up
            if not grow.any():
                break
            pairs = counts.view(-1, half, 2).sum(-1)
            z = torch.zeros_like(pairs)
            new = torch.where(down[:, None], torch.cat([z, pairs], 1), torch.cat([pairs, z], 1))
            counts = torch.where(grow[:, None], new, counts)
            lo = torch.where(down, lo - bins * width, lo)
            width = torch.where(grow, width * 2, width)
        idx = ((x - lo[:, None]) / width[:, None]).floor().clamp(0, bins - 1).long()
        counts.scatter_add_(1, idx, torch.ones_like(x))
    want = q * counts.sum(1)
    above = counts.flip(1).cumsum(1).flip(1) - counts
    j = (((above + counts) >= want[:, None]).long() * torch.arange(bins)).amax(1)
    n_j, a_j = counts.gather(1, j[:, None])[:, 0], above.gather(1, j[:, None])[:, 0]
    frac = torch.where(n_j > 0, (want - a_j) / n_j.clamp(min=1), torch.zeros_like(n_j))
    return lo + (j + 1).to(torch.float64) * width - frac.clamp(0, 1) * width


def test_histogram_thresholds_equal_the_plain_histogram():
    g = torch.Generator().manual_seed(1)
    # ranges that grow up, down and by orders of magnitude across batches; a constant unit
    batches = [torch.randn(6, 50, generator=g) * s + o for s, o in ((1, 0), (3, -4), (0.1, 9), (40, 0))]
    for b in batches:
        b[5] = 2.0
    h = DoublingHistogram(6, 64)
    for b in batches:
        h.update(b)
    for q in (0.005, 0.1, 0.5):
        assert torch.equal(h.upper_quantile(q), plain_histogram_thresholds(batches, 64, q))
    h2 = DoublingHistogram.from_state(h.state())
    assert torch.equal(h2.upper_quantile(0.01), h.upper_quantile(0.01))


# -- pass 2 kernel pieces --------------------------------------------------------------------------
def test_counter_is_exact_at_thresholds_on_pixel_values():
    """Thresholds equal to upsampled pixel values (the margin path decides them with F.interpolate);
    counts equal the direct formula, in chunks of one map and of many."""
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(5, 5, 5, 5, generator=g)
    maps[:, 4] = 0.3  # a flat unit with its threshold at its value: rounding decides the pixels
    masks = torch.rand(5, 3, 8, 8, generator=g) > 0.5
    up = torch.cat([F.interpolate(maps[i].reshape(-1, 1, 5, 5), size=(8, 8), mode="bilinear",
                                  align_corners=False)[:, 0][None] for i in range(5)])
    thr = torch.stack([up[0, 0, 3, 3], up[1, 1, 0, 7], up[2, 2, 4, 4], torch.tensor(-10.0),
                       maps[0, 4, 0, 0]]).double()
    want_act = up.to(torch.float64) > thr.view(1, -1, 1, 1)
    want = torch.einsum("iuhw,ichw->uc", want_act.double(), masks.double())
    for budget in (8 * ActiveCounter.BYTES_PER_PIXEL * 64, 1 << 30):  # 1 map per chunk, sparse; many
        c = ActiveCounter(thr, 8, memory_budget=budget)
        assert (c.chunk == 1) == (budget < 1 << 30)
        pats = ConceptPatterns(3)
        c.update(maps[:2], pats.ids(masks[:2]))
        c.update(maps[2:], pats.ids(masks[2:]))
        inter, act, mask = concept_counts(*c.table(), pats.bits(), pats.counts, 5)
        assert torch.equal(inter, want) and torch.equal(act, want_act.double().sum((0, 2, 3)))
        assert torch.equal(mask, masks.double().sum((0, 2, 3)))
        assert c.exact_maps >= 3  # the three thresholds on pixel values went through F.interpolate


def test_counter_reuses_its_buffers_across_batches():
    g = torch.Generator().manual_seed(0)
    c = ActiveCounter(torch.full((6,), -5.0, dtype=torch.float64), 16)  # every map hot
    pats = ConceptPatterns(2)
    ptrs = []
    maps, masks = torch.randn(4, 6, 4, 4, generator=g), torch.rand(4, 2, 16, 16, generator=g) > .5
    for _ in range(3):  # batches of the same size: no new buffer after the first
        c.update(maps.clone(), pats.ids(masks))
        ptrs.append(tuple(b.data_ptr() for b in c._buffers.values()))
    assert len(set(ptrs)) == 1 and len(ptrs[0]) == 4


def test_patterns_round_trip_many_concepts():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(3, 130, 4, 4, generator=g) > 0.9  # three int64 words per pattern
    pats = ConceptPatterns(130)
    ids = torch.cat([pats.ids(masks[:2]), pats.ids(masks[2:])])
    bits = pats.bits()
    assert torch.equal(bits[ids].permute(0, 2, 1), masks.reshape(3, 130, 16))
    assert pats.counts.sum() == 3 * 16
    again = ConceptPatterns.from_state(pats.state())
    assert torch.equal(again.bits(), bits) and torch.equal(again.ids(masks[2:]), ids[2:])


def test_iou_table_matches_the_formula():
    inter = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    assert torch.equal(iou_table(inter, torch.tensor([3.0], dtype=torch.float64),
                                 torch.tensor([4.0, 0.0], dtype=torch.float64)),
                       torch.tensor([[2 / 5, 0.0]], dtype=torch.float64))


def test_memory_budget_parsing():
    assert parse_memory("2G") == 2 << 30 and parse_memory("512M") == 512 << 20
    assert parse_memory(None) > 0 and parse_memory(1 << 30) == 1 << 30
    with pytest.raises(UserError, match="memory-budget"):
        parse_memory("lots")
    with pytest.raises(UserError, match="too small"):
        parse_memory("1K")


# -- resume and reuse ------------------------------------------------------------------------------
class NoForward:
    """A target that must not be run (every layer's counts are stored)."""

    def __init__(self, target):
        self.target = target

    def __getattr__(self, name):
        if name in ("model", "run"):
            raise AssertionError("the model was run although the counts were stored")
        return getattr(self.target, name)


@pytest.mark.parametrize("stop_pass", [1, 2])
def test_interrupted_pass_resumes_to_the_same_labels(tmp_path, stop_pass):
    from neuronatlas.describe import netdissect_passes

    torch.set_num_threads(1)
    run = na.record("zoo:synthetic-units", "world:n=24,size=32,seed=1", tmp_path / "run",
                    layers="units", num_workers=0)
    whole = netdissect(run, write=False, batch_size=5)
    import shutil

    shutil.rmtree(run.path / "dissect")
    real = netdissect_passes._pass
    calls = []

    def interrupting(store, which, *args, **kw):
        calls.append(which)
        if which == stop_pass and calls.count(which) == 1:
            args = list(args)
            args[-1] = 2  # stop_after: 2 batches, then an interruption
        return real(store, which, *args, **kw)

    netdissect_passes._pass = interrupting
    try:
        with pytest.raises(KeyboardInterrupt):
            netdissect(run, write=False, batch_size=5)
        resumed = netdissect(run, write=False, batch_size=5)
    finally:
        netdissect_passes._pass = real
    assert resumed.equals(whole)
    # every layer stored: a third run does not touch the model
    again = netdissect(run, write=False, batch_size=5, target=NoForward(target_for_run(run)), top=3)
    assert again.equals(whole[whole["rank"] < 3].reset_index(drop=True))
