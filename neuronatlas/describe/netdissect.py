"""NetDissect IoU labels (Bau et al. 2017, "Network Dissection"), streaming over the probe set.

For every unit of a layer with a spatial grid:

1. threshold T_u = the unit's top-`quantile` (default 0.5%) value over all (image, grid position)
   values of the probe set: the (1 - quantile) quantile of its raw feature-map values;
2. each image's map is upsampled bilinearly (align_corners=False) to the concept masks' resolution
   and thresholded: A_u = {pixels with upsampled value > T_u};
3. IoU(u, c) = sum_images |A_u & M_c| / sum_images |A_u | M_c|, the counts summed over the whole
   probe set (the paper's dataset-wide IoU, not a mean of per-image IoUs);
4. labels: the concepts by IoU, highest first (`top` of them), rank 0 = the NetDissect label.

Two passes over the images, re-running the run's target: pass 1 builds a per-unit histogram for the
quantile, pass 2 counts intersections. Memory is independent of the number of images: (units x bins)
histogram counts and (units x concepts) intersection counts. The quantile comes from a histogram of
`bins` (2048) equal bins whose range doubles whenever a value falls outside it, with linear
interpolation inside the bin: within one bin width (the unit's value range / 2048) of the exact one.

Concept masks: the `world:` probe set (`WorldProbeSet.masks`: every shape, colour, texture, size,
position and background concept) or a Broden-format folder (`broden:PATH`, see data/broden.py;
any probe set with `masks(i, size)` and `mask_concepts()`). Others are refused with a one-line error.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError

DEFAULTS = {"quantile": 0.005, "mask_size": None, "top": 5, "batch_size": 32, "bins": 2048}


# -- pass 1: streaming per-unit quantile -------------------------------------------------------------
class DoublingHistogram:
    """Per-unit histogram of `bins` equal bins; a unit's range doubles (pairs of bins merge) until it
    covers every value seen. `update((U, n) values)`, then `upper_quantile(q)` -> (U,) thresholds."""

    def __init__(self, n_units: int, bins: int = 2048):
        if bins < 2 or bins % 2:
            raise ValueError("bins must be an even number >= 2")
        self.n_units, self.bins = n_units, bins
        self.counts = torch.zeros(n_units, bins, dtype=torch.float64)
        self.lo = self.width = None

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().to(torch.float64).reshape(self.n_units, -1)
        if x.shape[1] == 0:
            return
        if not torch.isfinite(x).all():
            raise UserError("non-finite activations (NaN/inf) in the layer: check the model weights "
                            "and input normalisation")
        xmin, xmax = x.min(1).values, x.max(1).values
        if self.lo is None:
            span = xmax - xmin
            tiny = torch.clamp(xmax.abs() * 1e-6, min=1e-12)
            self.lo = xmin.clone()
            self.width = torch.where(span > 0, span * (1 + 1e-9), tiny) / self.bins
        half = self.bins // 2
        for _ in range(2100):  # float64 ranges cannot double more often than this
            hi = self.lo + self.bins * self.width
            down, up = xmin < self.lo, xmax >= hi
            grow = down | up
            if not grow.any():
                break
            pairs = self.counts.view(self.n_units, half, 2).sum(-1)
            zeros = torch.zeros_like(pairs)
            merged_up = torch.cat([pairs, zeros], 1)  # range [lo, lo + 2 B w)
            merged_down = torch.cat([zeros, pairs], 1)  # range [lo - B w, lo + B w)
            new = torch.where(down[:, None], merged_down, merged_up)
            self.counts = torch.where(grow[:, None], new, self.counts)
            self.lo = torch.where(down, self.lo - self.bins * self.width, self.lo)
            self.width = torch.where(grow, self.width * 2, self.width)
        idx = ((x - self.lo[:, None]) / self.width[:, None]).floor().clamp(0, self.bins - 1).long()
        self.counts.scatter_add_(1, idx, torch.ones_like(x))

    def upper_quantile(self, q: float) -> torch.Tensor:
        """T such that a fraction `q` of each unit's values lie above T (linear within a bin)."""
        if self.lo is None:
            raise ValueError("no values seen")
        total = self.counts.sum(1)
        want = q * total  # values that should lie above T
        above = self.counts.flip(1).cumsum(1).flip(1) - self.counts  # strictly higher bins
        # the bin holding T: the highest bin whose count + everything above reaches `want`
        reach = (above + self.counts) >= want[:, None]
        j = (reach.long() * torch.arange(self.bins)).amax(1)
        n_j = self.counts.gather(1, j[:, None])[:, 0]
        a_j = above.gather(1, j[:, None])[:, 0]
        frac = torch.where(n_j > 0, (want - a_j) / n_j.clamp(min=1), torch.zeros_like(n_j))
        upper = self.lo + (j + 1).to(torch.float64) * self.width
        return upper - frac.clamp(0, 1) * self.width


# -- pass 2: IoU counts ------------------------------------------------------------------------------
class IoUCounter:
    """Sums |A_u & M_c|, |A_u| and |M_c| over images, for thresholded upsampled maps A and masks M."""

    def __init__(self, thresholds: torch.Tensor, n_concepts: int, mask_size: int,
                 max_elements: int = 1 << 24):
        thr = thresholds.to(torch.float64)
        # the largest float32 <= each threshold: for float32 x, x > t (float64) iff x > this, so the
        # per-pixel compare runs in float32 with the same result
        t32 = thr.to(torch.float32)
        self.thr = torch.where(t32.to(torch.float64) > thr,
                               torch.nextafter(t32, torch.tensor(-float("inf"))), t32)
        n_units = len(thresholds)
        self.mask_size, self.max_elements = mask_size, max_elements
        self.inter = torch.zeros(n_units, n_concepts, dtype=torch.float64)
        self.act = torch.zeros(n_units, dtype=torch.float64)
        self.mask = torch.zeros(n_concepts, dtype=torch.float64)

    def update(self, maps_BUhw: torch.Tensor, masks_BCMM: torch.Tensor) -> None:
        b, n_units = maps_BUhw.shape[:2]
        m = self.mask_size
        masks = masks_BCMM.to(torch.float32).reshape(b, -1, m * m)
        self.mask += masks.sum((0, 2)).to(torch.float64)
        masks_P = masks.permute(1, 0, 2).reshape(masks.shape[1], b * m * m)  # (C, B*M*M)
        step = max(1, self.max_elements // max(1, b * m * m))
        for a in range(0, n_units, step):
            part = maps_BUhw[:, a:a + step].float()
            up = F.interpolate(part, size=(m, m), mode="bilinear", align_corners=False)
            act = (up > self.thr[a:a + step].view(1, -1, 1, 1)).to(torch.float32)
            act_P = act.permute(1, 0, 2, 3).reshape(act.shape[1], -1)  # (u, B*M*M)
            self.act[a:a + step] += act_P.sum(1).to(torch.float64)
            # counts per chunk are <= B*M*M, exact in float32 when below 2**24
            self.inter[a:a + step] += (act_P @ masks_P.T).to(torch.float64)

    def iou(self) -> torch.Tensor:
        union = self.act[:, None] + self.mask[None, :] - self.inter
        return torch.where(union > 0, self.inter / union.clamp(min=1), torch.zeros_like(union))


# -- the labeler ---------------------------------------------------------------------------------------
def _concept_masks(probe, indices, concept_ids: list[str], size: int) -> torch.Tensor:
    pos = {c: i for i, c in enumerate(concept_ids)}
    out = np.zeros((len(indices), len(concept_ids), size, size), np.float32)
    for j, i in enumerate(indices):
        for key, m in probe.masks(int(i), size).items():
            if key in pos:
                out[j, pos[key]] = m
    return torch.from_numpy(out)


def _check_probe(probe) -> None:
    if not (hasattr(probe, "masks") and (hasattr(probe, "scene") or hasattr(probe, "mask_concepts"))):
        raise UserError(f"netdissect needs concept masks, which the probe set "
                        f"{getattr(probe, 'spec', probe)} does not have: record the run on a "
                        f"world: probe set (e.g. --data world:n=1000,size=224) or a Broden-format "
                        f"folder (broden:PATH)")


def probe_concepts(probe) -> list[tuple[str, str, str]]:
    """(concept id, phrase, category) of every concept the probe set has masks for: the probe's
    `mask_concepts()` (Broden folders) or the world's vocabulary."""
    if hasattr(probe, "mask_concepts"):
        return list(probe.mask_concepts())
    from ..data.world import CONCEPTS

    return [(c, CONCEPTS[c].phrase, CONCEPTS[c].category) for c in CONCEPTS.ids()]


def netdissect(run, write: bool = True, **options):
    """Label every unit of the run's spatial layers by NetDissect IoU; returns the labels table
    (unit, method, rank, label, score=IoU, concept, category, threshold) and, with `write`, stores it
    as the run's "netdissect" labels. Options: layers (default: every recorded layer with a grid),
    quantile (0.005), mask_size (default min(probe size, 112)), top (5 labels per unit),
    batch_size, bins (2048), target, probe, show_progress."""
    from .. import run as rundir

    run = rundir.open_run(run) if not isinstance(run, rundir.Run) else run
    df, config = _netdissect(run, **options)
    if write:
        rundir.write_labels(run.path, "netdissect", df, {"method": "netdissect", **config})
    return df


OPTIONS = ("layers", "quantile", "mask_size", "top", "batch_size", "bins", "target", "probe",
           "show_progress")


def describe_netdissect(run, **options):
    """The `METHODS` entry of `neuronatlas.describe`: (labels without the method column, config).
    Options left at None are dropped (a CLI may pass its scorer=None, concepts=None...)."""
    options = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise UserError(f"netdissect does not take {', '.join(unknown)} (it uses the world's concept "
                        f"masks, no scorer or concept list); its options are {', '.join(OPTIONS)}")
    df, config = _netdissect(run, **options)
    return df.drop(columns="method"), config


def _netdissect(run, layers=None, quantile: float = 0.005, mask_size: int | None = None,
                top: int = 5, batch_size: int = 32, bins: int = 2048, target=None, probe=None,
                show_progress: bool = False):
    import pandas as pd

    from ..atlas.exemplars import probe_for_run, target_for_run
    from ..data import iter_batches
    from ..recording.hooks import Capture
    from ..recording.progress import Progress

    if not 0 < quantile < 1:
        raise UserError(f"quantile must be between 0 and 1 (got {quantile}); the paper uses 0.005")
    probe = probe_for_run(run, probe)
    _check_probe(probe)
    target = target_for_run(run, target)
    names = [layers] if isinstance(layers, str) else list(layers or run.layers)
    for name in names:
        run.parse_unit(f"{name}:0")  # unknown layer -> UserError with near matches
    points = [p for p in target.select(names) if p.layout.has_grid]
    if not points:
        raise UserError(f"netdissect needs layers with a spatial grid; {', '.join(names)} "
                        f"{'has' if len(names) == 1 else 'have'} none (vector outputs): pick conv "
                        f"or token layers")
    size = mask_size or min(int(getattr(probe, "size", 112)), 112)
    concepts = probe_concepts(probe)
    if not concepts:
        raise UserError(f"the probe set {probe.spec} defines no concepts (empty label list)")
    concept_ids = [c[0] for c in concepts]
    ok = run.images
    indices = ok.loc[ok["status"] == "ok", "index"].to_numpy(np.int64)
    if len(indices) == 0:
        raise UserError(f"{run.path} recorded no images: nothing to dissect")
    capture = Capture(target, points, reduce={
        p.name: (lambda out, p=p: p.layout.spatial_map(p.layout.canonical(out)).float().cpu())
        for p in points})
    transform = target.preprocess.transform()

    def batches(what: str):
        bar = Progress(f"netdissect: {what}", len(indices), enabled=show_progress)
        try:
            for batch in iter_batches(probe, transform, indices, batch_size, num_workers=0):
                if len(batch.indices):
                    inputs = target.make_batch(batch.pixels.to(target.device), batch.indices, probe)
                    yield batch.indices, capture.run(inputs)
                bar.advance(len(batch.indices) + len(batch.failed))
        finally:
            bar.close()

    hists = {p.name: DoublingHistogram(p.n_units, bins) for p in points}
    with capture.attached():
        for _, outs in batches("quantiles"):
            for p in points:
                maps = outs[p.name]
                hists[p.name].update(maps.transpose(0, 1).reshape(p.n_units, -1))
        thresholds = {n: h.upper_quantile(quantile) for n, h in hists.items()}
        counters = {p.name: IoUCounter(thresholds[p.name], len(concept_ids), size) for p in points}
        for idx, outs in batches("IoU"):
            masks = _concept_masks(probe, idx, concept_ids, size)
            for p in points:
                counters[p.name].update(outs[p.name], masks)

    rows = []
    k = min(top, len(concept_ids))
    for p in points:
        iou = counters[p.name].iou()
        order = torch.argsort(-iou, dim=1, stable=True)[:, :k]
        thr = thresholds[p.name]
        for u in range(p.n_units):
            for r, c in enumerate(order[u].tolist()):
                cid, phrase, category = concepts[c]
                rows.append((f"{p.name}:{u}", "netdissect", r, phrase, float(iou[u, c]), cid,
                             category, float(thr[u])))
    df = pd.DataFrame(rows, columns=["unit", "method", "rank", "label", "score", "concept",
                                     "category", "threshold"])
    config = {"quantile": quantile, "mask_size": size, "top": k,
              "bins": bins, "layers": [p.name for p in points], "probe": probe.spec,
              "concepts": "world" if probe.kind == "world" else probe.spec,
              "n_concepts": len(concept_ids), "n_images": int(len(indices))}
    return df, config
