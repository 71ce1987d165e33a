"""The ablation suite of the second-order lens, measured by zero-shot accuracy.

For an image with embedding e (in the effects' scale) and centred effects E_n - mean_n of the layer's
neurons, each condition replaces some centred effects by zero (= by the neuron's mean effect):

    baseline           e
    mean_all           e - sum_n (E_n - mean_n)                      every effect mean-ablated
    mean_significant   e - sum_{n significant} (E_n - mean_n)        only the significant ones
    keep_significant   e - sum_{n not significant} (E_n - mean_n)    only the significant ones kept
    pc_projection      e - sum_n (E_n - mean_n) + sum_n ((E_n - mean_n) . pc_n) pc_n
    full               e (every effect replaced by itself: a sanity check, equal to baseline)

Significant: the centred norm reaches the neuron's threshold (the k-th largest norm on the images the
statistics were computed on). Everything is done in the factored form: E_n - mean_n = (c_n - c_mean_n)
@ u_n, so a batch costs one (B, N K) x (N K, D) product per condition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from .effects import Coefficients

CONDITIONS = ("baseline", "mean_all", "mean_significant", "keep_significant", "pc_projection", "full")


@dataclass
class AblationStats:
    """What the ablations need from a SecondOrderResult (float64 torch tensors)."""

    mean_coefficient: torch.Tensor  # (N, K)
    threshold: torch.Tensor  # (N,)
    pc: torch.Tensor  # (N, D)
    head_vectors: torch.Tensor  # (K, N, D)

    @classmethod
    def from_result(cls, result, device=None) -> "AblationStats":
        def t(a):
            return torch.as_tensor(np.array(a), dtype=torch.float64, device=device)
        return cls(t(result.mean_coefficient), t(result.threshold), t(result.pc), t(result.head_vectors))

    def __post_init__(self):
        u = self.head_vectors
        self.gram = torch.einsum("knd,lnd->nkl", u, u)  # (N, K, K)
        self.pc_weights = torch.einsum("knd,nd->nk", u, self.pc)  # (N, K): u_n . pc_n per head
        self.flat_u = u.transpose(0, 1).reshape(-1, u.shape[-1])  # (N*K, D), rows (n, k)

    def centred_norms(self, centred_BNK: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bnk,nkl,bnl->bn", centred_BNK, self.gram, centred_BNK).clamp(min=0).sqrt()


@torch.no_grad()
def ablated_embeddings(coefficients: Coefficients, stats: AblationStats, condition: str) -> torch.Tensor:
    """(B, D) embeddings, in the effects' scale, under one ablation `condition`."""
    if condition not in CONDITIONS:
        raise UserError(f"unknown ablation {condition!r}: use one of {', '.join(CONDITIONS)}")
    e = coefficients.scaled_embedding.to(torch.float64)
    if condition in ("baseline", "full"):
        return e
    cc = coefficients.coef_BNK.to(torch.float64) - stats.mean_coefficient  # (B, N, K)
    B = cc.shape[0]
    if condition == "pc_projection":
        along = torch.einsum("bnk,nk->bn", cc, stats.pc_weights)  # (E_n - mean_n) . pc_n
        return e - cc.reshape(B, -1) @ stats.flat_u + along @ stats.pc
    if condition != "mean_all":
        sig = stats.centred_norms(cc) >= stats.threshold
        mask = sig if condition == "mean_significant" else ~sig
        cc = cc * mask[..., None]
    return e - cc.reshape(B, -1) @ stats.flat_u


# -- zero-shot tasks ---------------------------------------------------------------------------------
TASKS = ("world-color", "world-shape", "imagenet", "labels")


@dataclass
class ZeroShotTask:
    name: str
    classes: list[str]
    prompts: list[list[str]]  # per class, averaged after normalisation
    labels: np.ndarray  # (n_images,) class index per probe image, -1 = no label

    def classifier(self, scorer) -> torch.Tensor:
        """(C, D) unit-length mean text embeddings of each class's prompts."""
        flat = [p for ps in self.prompts for p in ps]
        emb = scorer.encode_texts(flat).to(torch.float64)
        out, i = [], 0
        for ps in self.prompts:
            out.append(F.normalize(emb[i:i + len(ps)].mean(0), dim=-1))
            i += len(ps)
        return torch.stack(out)


IMAGENET_TEMPLATES = ("a photo of a {}.", "a bad photo of a {}.", "a photo of the large {}.",
                      "a photo of the small {}.", "a good photo of a {}.", "art of the {}.",
                      "a close-up photo of a {}.")


def zero_shot_task(name: str, probe) -> ZeroShotTask:
    """world-color / world-shape (single-object world probe sets: the object's colour or shape, the
    prompts world-clip's card evaluates with), imagenet (image labels are ImageNet class names), or
    labels (the probe's own labels are the classes, prompt 'a photo of a {}.')."""
    if name in ("world-color", "world-shape"):
        from ..data.world import CONCEPTS

        attr = name.split("-")[1]
        if getattr(probe, "kind", "") != "world":
            raise UserError(f"task {name} needs a world probe set (e.g. world:n=500,size=32,seed=999,"
                            f"objects=1), got {probe.spec or probe.kind}")
        classes = list(CONCEPTS.names(attr))
        prompts = [[f"a {c} thing"] if attr == "color" else [f"a {c}"] for c in classes]
        labels = []
        for i in range(len(probe)):
            objs = probe.scene(i).objects
            labels.append(classes.index(getattr(objs[0], attr)) if len(objs) == 1 else -1)
        return ZeroShotTask(name, classes, prompts, np.asarray(labels))
    if name == "imagenet":
        from ..concepts import imagenet_classes

        classes = imagenet_classes()
        lookup = {c.lower(): i for i, c in enumerate(classes)}
        labels = np.asarray([lookup.get((it.label or "").lower().replace("_", " "), -1)
                             for it in probe.items])
        if (labels < 0).all():
            raise UserError("no image label of the probe set is an ImageNet class name: put the "
                            "images in sub-folders named after the classes (e.g. 'goldfish/')")
        return ZeroShotTask(name, classes, [[t.format(c) for t in IMAGENET_TEMPLATES] for c in classes],
                            labels)
    if name == "labels":
        names = sorted({it.label for it in probe.items if it.label})
        if len(names) < 2:
            raise UserError("task 'labels' needs a probe set with at least two image labels "
                            "(class sub-folders)")
        lookup = {c: i for i, c in enumerate(names)}
        labels = np.asarray([lookup.get(it.label, -1) for it in probe.items])
        return ZeroShotTask(name, names, [[f"a photo of a {c}."] for c in names], labels)
    raise UserError(f"unknown zero-shot task {name!r}: use one of {', '.join(TASKS)}")


@torch.no_grad()
def zero_shot_ablations(lens, target, result, probe, task: str | ZeroShotTask, batch_size: int = 32,
                        num_workers: int | None = None, show_progress: bool = True):
    """Top-1 zero-shot accuracy of every condition on `probe` (a probe set other than the one the
    statistics came from), as a table: condition, accuracy, n, task, layer."""
    import pandas as pd

    from ..backends.clip import scorer_from_target
    from ..data import iter_batches, open_probe
    from ..recording.progress import Progress

    probe = open_probe(probe)
    task = task if isinstance(task, ZeroShotTask) else zero_shot_task(task, probe)
    stats = AblationStats.from_result(result, device=lens.vit.device)
    if stats.head_vectors.shape[1] != lens.n_neurons or result.block != lens.layer:
        raise UserError(f"the stored effects are for {result.layer}, not for block {lens.layer}")
    text = task.classifier(scorer_from_target(target)).to(lens.vit.device)
    keep = np.flatnonzero(task.labels >= 0)
    if not len(keep):
        raise UserError(f"no image of the probe set has a {task.name} label")
    hits = {c: 0 for c in CONDITIONS}
    n = 0
    bar = Progress(f"ablations of {lens.unit_layer}", len(keep), enabled=show_progress)
    try:
        for batch in iter_batches(probe, target.preprocess.transform(), keep, batch_size, num_workers):
            if not len(batch.indices):
                continue
            co = lens.coefficients(batch.pixels.to(lens.vit.device))
            y = torch.as_tensor(task.labels[batch.indices], device=text.device)
            for c in CONDITIONS:
                emb = F.normalize(ablated_embeddings(co, stats, c), dim=-1)
                hits[c] += int(((emb @ text.T).argmax(1) == y).sum())
            n += len(batch.indices)
            bar.advance(len(batch.indices) + len(batch.failed))
    finally:
        bar.close()
    return pd.DataFrame({"condition": list(CONDITIONS), "accuracy": [hits[c] / max(n, 1) for c in CONDITIONS],
                         "n": n, "task": task.name, "layer": lens.unit_layer})
