"""The two streaming passes of NetDissect over a run's probe set, resumable, shared by netdissect and
compositional NetDissect.

Pass 1 re-runs the run's target once and fills a per-unit DoublingHistogram (the quantile
threshold); pass 2 re-runs it once more and counts the active pixels of every unit per concept
pattern (ActiveCounter, see netdissect_kernel.py). What each pass finishes is stored per layer in
RUN/dissect/KEY/ (run/dissect_store.py): a later run with the same settings skips the finished layers (no
forward pass at all when every layer is done), and an interrupted pass resumes from its last
checkpoint (every `checkpoint_seconds`) at the batch it reached. Progress shows images and units.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass

import numpy as np
import torch

from .netdissect_kernel import (ActiveCounter, ConceptPatterns, DoublingHistogram, concept_counts,
                                iou_table)


@dataclass
class LayerCounts:
    """One layer's finished counts: thresholds (U,) float64, the (unit, pattern, count) table of
    active pixels, the pattern table bits (P, C) bool with pixel counts (P,)."""
    layer: str
    thresholds: torch.Tensor
    units: torch.Tensor
    patterns: torch.Tensor
    counts: torch.Tensor
    bits: torch.Tensor
    pattern_counts: torch.Tensor

    @property
    def n_units(self) -> int:
        return len(self.thresholds)

    def concept_counts(self):
        """(inter (U, C), act (U,), mask (C,)) float64."""
        return concept_counts(self.units, self.patterns, self.counts, self.bits,
                              self.pattern_counts, self.n_units)

    def iou(self) -> torch.Tensor:
        return iou_table(*self.concept_counts())


def concept_masks(probe, indices, concept_ids: list[str], size: int) -> torch.Tensor:
    """(B, C, size, size) bool masks of `concept_ids` for probe images `indices`."""
    pos = {c: i for i, c in enumerate(concept_ids)}
    out = np.zeros((len(indices), len(concept_ids), size, size), bool)
    for j, i in enumerate(indices):
        for key, m in probe.masks(int(i), size).items():
            if key in pos:
                out[j, pos[key]] = m
    return torch.from_numpy(out)


def store_key(run, concept_ids, quantile, bins, batch_size, size) -> dict:
    concepts = hashlib.sha256("\n".join(concept_ids).encode()).hexdigest()[:16]
    return {"model": run.meta["key"]["model"], "probe": run.meta["key"]["probe"]["fingerprint"],
            "quantile": quantile, "bins": bins, "batch_size": batch_size, "mask_size": size,
            "concepts": concepts, "n_concepts": len(concept_ids), "input": "whole image"}


def whole_image(preprocess):
    """The model's preprocessing without its center crop (resize straight to the input size)."""
    return dataclasses.replace(preprocess, resize=None)


def dissect_counts(run, points, probe, target, indices, concept_ids: list[str], size: int,
                   quantile: float, bins: int, batch_size: int, memory_budget: int,
                   show_progress: bool = False, checkpoint_seconds: float = 60.0,
                   stop_after: int | None = None) -> dict[str, LayerCounts]:
    """The finished counts of every layer in `points` (UnitViews with a grid), computing what the
    run's dissect store does not hold yet. `stop_after` (tests) interrupts after that many batches
    of a pass, as a KeyboardInterrupt would, leaving its checkpoint."""
    from ..run.dissect_store import DissectStore

    store = DissectStore(run.path, store_key(run, concept_ids, quantile, bins, batch_size, size))
    todo1 = [p for p in points if not store.has(p.name, "pass1")]
    if todo1:
        hists = _pass(store, 1, todo1, probe, target, indices, batch_size, show_progress,
                      checkpoint_seconds, stop_after,
                      init=lambda: ({p.name: DoublingHistogram(p.n_units, bins) for p in todo1}, None),
                      restore=lambda st: ({n: DoublingHistogram.from_state(s) for n, s in st.items()},
                                          None),
                      step=_hist_step)
        for p in todo1:
            store.save(p.name, "pass1", {"thresholds": hists[0][p.name].upper_quantile(quantile).numpy()})
        store.clear_checkpoint()
    thresholds = {p.name: torch.as_tensor(store.load(p.name, "pass1")["thresholds"]) for p in points}
    todo2 = [p for p in points if not store.has(p.name, "pass2")]
    if todo2:
        device = target.device

        def init():
            return ({p.name: ActiveCounter(thresholds[p.name], size, memory_budget, device)
                     for p in todo2}, ConceptPatterns(len(concept_ids)))

        def restore(st):
            pats = ConceptPatterns.from_state(st.pop("__patterns__"))
            return ({n: ActiveCounter.from_state(s, size, memory_budget, device)
                     for n, s in st.items()}, pats)

        def step(accs, idx, outs):
            counters, pats = accs
            ids = pats.ids(concept_masks(probe, idx, concept_ids, size))
            for name, c in counters.items():
                c.update(outs[name], ids)

        counters, pats = _pass(store, 2, todo2, probe, target, indices, batch_size, show_progress,
                               checkpoint_seconds, stop_after, init=init, restore=restore, step=step)
        pat_state = pats.state()
        for p in todo2:
            u, pt, c = counters[p.name].table()
            store.save(p.name, "pass2", {"units": u.numpy(), "patterns": pt.numpy(),
                                         "counts": c.numpy(), "pattern_rows": pat_state["rows"],
                                         "pattern_counts": pat_state["counts"],
                                         "exact_maps": np.array(counters[p.name].exact_maps)})
        store.clear_checkpoint()
    out = {}
    for p in points:
        z = store.load(p.name, "pass2")
        pats = ConceptPatterns.from_state({"rows": z["pattern_rows"], "counts": z["pattern_counts"],
                                           "n_concepts": np.array(len(concept_ids))})
        out[p.name] = LayerCounts(p.name, thresholds[p.name], torch.as_tensor(z["units"]),
                                  torch.as_tensor(z["patterns"]), torch.as_tensor(z["counts"]),
                                  pats.bits(), pats.counts)
    return out


def _hist_step(accs, idx, outs):
    hists, _ = accs
    for name, h in hists.items():
        maps = outs[name]
        h.update(maps.transpose(0, 1).reshape(h.n_units, -1))


def _pass(store, which, points, probe, target, indices, batch_size, show_progress,
          checkpoint_seconds, stop_after, init, restore, step):
    """Stream the probe set once for `points`; returns the accumulators `init()` made (or the
    checkpoint restored), after `step(accs, image indices, {layer: (B, U, h, w) maps})` on every
    batch."""
    from ..data import iter_batches
    from ..recording.hooks import Capture
    from ..recording.progress import Progress

    names = [p.name for p in points]
    done = 0
    ck = store.load_checkpoint()
    if ck is not None and ck[1].get("pass") == which and ck[1].get("layers") == names:
        states, progress = ck
        done = int(progress["batches"])
        accs = restore(states)
    else:
        accs = init()
    capture = Capture(target, points, reduce={
        p.name: (lambda out, p=p: p.layout.spatial_map(p.canonical(out)).float().cpu())
        for p in points})
    # the whole image, resized to the input size without the center crop (as the reference feeds
    # Broden images): the concept masks cover the whole image, so a cropped map would misalign
    transform = whole_image(target.preprocess).transform()
    n_units = sum(p.n_units for p in points)
    what = "quantiles" if which == 1 else "IoU counts"
    start = min(done * batch_size, len(indices))
    bar = Progress(f"netdissect pass {which}/2 ({what}, {n_units:,} units in {len(points)} "
                   f"layer{'s' if len(points) > 1 else ''})", len(indices), completed=start,
                   enabled=show_progress)
    last = time.monotonic()
    batches = 0
    consistent = True  # False while a step is updating the accumulators

    def checkpoint():
        layers, extra = accs
        states = {n: a.state() for n, a in layers.items()}
        if extra is not None:
            states["__patterns__"] = extra.state()
        store.save_checkpoint(states, {"pass": which, "layers": names, "batches": done})

    try:
        with capture.attached():
            for batch in iter_batches(probe, transform, indices[start:], batch_size, num_workers=0):
                if len(batch.indices):
                    inputs = target.make_batch(batch.pixels.to(target.device), batch.indices, probe)
                    outs = capture.run(inputs)
                    consistent = False
                    step(accs, batch.indices, outs)
                done += 1
                consistent = True
                batches += 1
                bar.advance(len(batch.indices) + len(batch.failed))
                if stop_after is not None and batches >= stop_after:
                    checkpoint()
                    raise KeyboardInterrupt
                if time.monotonic() - last > checkpoint_seconds:
                    checkpoint()
                    last = time.monotonic()
    except KeyboardInterrupt:
        if stop_after is None and consistent:
            checkpoint()
        raise
    finally:
        bar.close()
    return accs


__all__ = ["LayerCounts", "concept_masks", "dissect_counts"]
