"""NetDissect IoU labels (Bau et al. 2017, "Network Dissection"), streaming over the probe set.

For every unit of a layer with a spatial grid:

1. threshold T_u = the unit's top-`quantile` (default 0.5%) value over all (image, grid position)
   values of the probe set: the (1 - quantile) quantile of its raw feature-map values;
2. each image's map is upsampled bilinearly (align_corners=False) to the concept masks' resolution
   and thresholded: A_u = {pixels with upsampled value > T_u};
3. IoU(u, c) = sum_images |A_u & M_c| / sum_images |A_u | M_c|, the counts summed over the whole
   probe set (the paper's dataset-wide IoU, not a mean of per-image IoUs);
4. labels: the concepts by IoU, highest first (`top` of them), rank 0 = the NetDissect label.

Two passes over the images, re-running the run's target (describe/netdissect_passes.py: resumable,
finished layers stored in the run and reused): pass 1 builds a per-unit histogram for the quantile,
pass 2 counts each unit's active pixels per concept pattern (describe/netdissect_kernel.py: only
maps that reach the threshold are upsampled, exact counts, chunks sized from `memory_budget`).
Memory is independent of the number of images: (units x bins) histogram counts and a sparse
(unit x concept pattern) count table. The quantile comes from a histogram of
`bins` (2048) equal bins whose range doubles whenever a value falls outside it, with linear
interpolation inside the bin: within one bin width (the unit's value range / 2048) of the exact one.

Concept masks: the `world:` probe set (`WorldProbeSet.masks`: every shape, colour, texture, size,
position and background concept) or a Broden-format folder (`broden:PATH`, see data/broden.py;
any probe set with `masks(i, size)` and `mask_concepts()`). Others are refused with a one-line error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import Any, opt
from ..errors import UserError
from .base import LabelerConfig, Labels, labeler
from .netdissect_kernel import DoublingHistogram, parse_memory  # noqa: F401 (DoublingHistogram: API)


# -- the labeler ---------------------------------------------------------------------------------------
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


@dataclass(frozen=True)
class NetDissectConfig(LabelerConfig):
    layers: tuple[str, ...] | None = opt(None, "Comma-separated layers (default: every recorded "
                                               "layer with a spatial grid).")
    quantile: float = opt(0.005, "Top fraction of a unit's map values that counts as active "
                                 "(the paper's 0.5%).")
    mask_size: int | None = opt(None, "Side of the concept masks the maps are upsampled to "
                                      "(default min(probe size, 112)).")
    top: int = opt(5, "Labels kept per unit (ranked by IoU).")
    batch_size: int = opt(32, "Images per forward pass.")
    bins: int = opt(2048, "Histogram bins of the streaming quantile (even, >= 2).")
    memory_budget: int | str | None = opt(None, "Memory for the counting chunks: bytes or '2G' "
                                                "(default: a quarter of RAM).")
    probe: Any = opt(None, "Probe set, if it moved since recording.", flag="--data")
    target: Any = opt(None, "The run's model, already loaded (Python only).", cli=False)
    show_progress: bool = opt(False, "Show progress bars.")

    def validate(self) -> None:
        if not 0 < self.quantile < 1:
            raise self.error("quantile", "must be between 0 and 1 (the paper uses 0.005)")
        if self.top < 1:
            raise self.error("top", "must be at least 1")
        if self.bins < 2 or self.bins % 2:
            raise self.error("bins", "must be an even number >= 2")


@labeler("netdissect", NetDissectConfig)
def label(run, config: NetDissectConfig) -> Labels:
    """Label every unit of the run's spatial layers by NetDissect IoU: the labels table (unit,
    rank, label, score=IoU, concept, category, threshold) and the resolved settings."""
    c = config
    df, info = _netdissect(run, c.layers, c.quantile, c.mask_size, c.top, c.batch_size, c.bins,
                           memory_budget=c.memory_budget, target=c.target, probe=c.probe,
                           show_progress=c.show_progress)
    return Labels(df.drop(columns="method"), info)


def netdissect(run, write: bool = True, **options):
    """NetDissect labels of `run` (options: NetDissectConfig's fields) with a method column; with
    `write` (default) stored as the run's "netdissect" labels through `describe()`."""
    from .. import run as rundir

    run = rundir.open_run(run) if not isinstance(run, rundir.Run) else run
    if write:
        from . import describe

        return describe(run, "netdissect", **options)
    out = label(run, NetDissectConfig.from_options(**options))
    df = out.table
    df.insert(1, "method", "netdissect")
    return df


def _netdissect(run, layers=None, quantile: float = 0.005, mask_size: int | None = None,
                top: int = 5, batch_size: int = 32, bins: int = 2048, memory_budget=None,
                target=None, probe=None, show_progress: bool = False):
    import pandas as pd

    counts, concepts, config = layer_counts(run, layers, quantile, mask_size, batch_size, bins,
                                            memory_budget, target, probe, show_progress)
    rows = []
    k = min(top, len(concepts))
    for name, lc in counts.items():
        iou = lc.iou()
        order = torch.argsort(-iou, dim=1, stable=True)[:, :k]
        thr = lc.thresholds
        for u in range(lc.n_units):
            for r, c in enumerate(order[u].tolist()):
                cid, phrase, category = concepts[c]
                rows.append((run.unit_id(name, u), "netdissect", r, phrase, float(iou[u, c]), cid,
                             category, float(thr[u])))
    df = pd.DataFrame(rows, columns=["unit", "method", "rank", "label", "score", "concept",
                                     "category", "threshold"])
    return df, {**config, "top": k}


def layer_counts(run, layers=None, quantile: float = 0.005, mask_size: int | None = None,
                 batch_size: int = 32, bins: int = 2048, memory_budget=None, target=None,
                 probe=None, show_progress: bool = False):
    """({layer: LayerCounts}, concepts [(id, phrase, category)], config) of the run's spatial
    layers: the two passes (stored in the run and reused), shared with compositional NetDissect."""
    from ..recording.replay import probe_for_run, target_for_run, views_for_run
    from .netdissect_passes import dissect_counts

    if not 0 < quantile < 1:
        raise UserError(f"quantile must be between 0 and 1 (got {quantile}); the paper uses 0.005")
    probe = probe_for_run(run, probe)
    _check_probe(probe)
    target = target_for_run(run, target)
    names = [layers] if isinstance(layers, str) else list(layers or run.layers)
    for name in names:
        if name not in run.layers:
            run.parse_unit(f"{name}:0")  # unknown layer -> UserError with near matches
    points = [v for v in views_for_run(run, target, names) if v.layout.has_grid]
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
    budget = parse_memory(memory_budget)
    counts = dissect_counts(run, points, probe, target, indices, concept_ids, size, quantile, bins,
                            batch_size, budget, show_progress=show_progress)

    config = {"quantile": quantile, "mask_size": size, "bins": bins,
              "layers": [p.name for p in points], "probe": probe.spec,
              "concepts": "world" if probe.kind == "world" else probe.spec,
              "n_concepts": len(concept_ids), "n_images": int(len(indices))}
    return counts, concepts, config
