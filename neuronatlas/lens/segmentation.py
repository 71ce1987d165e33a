"""Zero-shot segmentation from CLIP neurons, its metrics, and the ImageNet-segmentation .mat loader.

The method (Gandelsman et al., second-order lens): for the class CLIP predicts for an image, take the
neurons whose second-order direction (first PC) is most aligned with that class's text embedding
(by pc . e, so they push towards the class; the reference ranked by |pc . e|, which on the world
also picks neurons that push away and does worse than random neurons for shapes),
sum their per-token second-order contributions projected on the class embedding, and read the patch
grid as a heatmap: upsampled bilinearly to the image, min-max normalised, thresholded at 0.5.
The random-neuron baseline takes as many neurons at random.

Metrics, as the ImageNet-segmentation benchmark computes them (Chefer et al.'s evaluation code, also
used by the TextSpan and second-order papers), two classes (background 0, foreground 1):
- pixel accuracy: correct pixels / all pixels, pooled over the data set;
- mIoU: mean over the two classes of intersection / union, each pooled over the data set;
- mAP: per image, the average precision of the scores of both channels ((1 - s) for background,
  s for foreground) against the one-hot truth, then the mean over images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError


# -- metrics (pure functions) ------------------------------------------------------------------------
def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision of binary `labels` ranked by `scores` (sum over positives' recall steps of
    precision, ties counted together as scikit-learn does). 0 when there is no positive."""
    y = np.asarray(labels, dtype=bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    n_pos = int(y.sum())
    if n_pos == 0:
        return 0.0
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each block of tied scores
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall_step = np.diff(np.r_[0, tp]) / n_pos
    return float((precision * recall_step).sum())


def image_ap(score_HW: np.ndarray, truth_HW: np.ndarray) -> float:
    """The benchmark's per-image AP: background channel 1 - s and foreground channel s, flattened
    together against the one-hot truth."""
    s = np.asarray(score_HW, dtype=np.float64).ravel()
    t = np.asarray(truth_HW, dtype=bool).ravel()
    return average_precision(np.r_[~t, t], np.r_[1 - s, s])


@dataclass
class SegmentationScores:
    """Accumulates pixel accuracy, 2-class IoU and per-image AP over a data set."""

    correct: int = 0
    pixels: int = 0
    intersection: np.ndarray = field(default_factory=lambda: np.zeros(2, np.int64))
    union: np.ndarray = field(default_factory=lambda: np.zeros(2, np.int64))
    aps: list = field(default_factory=list)

    def add(self, mask_HW: np.ndarray, truth_HW: np.ndarray, score_HW: np.ndarray | None = None) -> None:
        mask, truth = np.asarray(mask_HW, dtype=bool), np.asarray(truth_HW, dtype=bool)
        if mask.shape != truth.shape:
            raise UserError(f"predicted mask {mask.shape} and ground truth {truth.shape} differ in "
                            f"size: upsample the heatmap to the mask's size first")
        self.correct += int((mask == truth).sum())
        self.pixels += mask.size
        for c, (p, t) in enumerate(((~mask, ~truth), (mask, truth))):
            self.intersection[c] += int((p & t).sum())
            self.union[c] += int((p | t).sum())
        if score_HW is not None:
            self.aps.append(image_ap(score_HW, truth))

    @property
    def pixel_accuracy(self) -> float:
        return self.correct / self.pixels if self.pixels else float("nan")

    @property
    def iou(self) -> np.ndarray:
        return np.where(self.union > 0, self.intersection / np.maximum(self.union, 1), np.nan)

    @property
    def miou(self) -> float:
        return float(np.nanmean(self.iou)) if self.pixels else float("nan")

    @property
    def map(self) -> float:
        return float(np.mean(self.aps)) if self.aps else float("nan")

    def summary(self) -> dict:
        return {"pixel_accuracy": self.pixel_accuracy, "miou": self.miou, "map": self.map,
                "iou_background": float(self.iou[0]), "iou_foreground": float(self.iou[1]),
                "n_images": max(len(self.aps), int(self.pixels > 0))}


# -- heatmaps to masks -------------------------------------------------------------------------------
def upsample(map_hw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of a (h, w) patch map to (H, W) (half-pixel centres, as torch's
    align_corners=False)."""
    import torch

    t = torch.as_tensor(np.asarray(map_hw, dtype=np.float32))[None, None]
    return torch.nn.functional.interpolate(t, size=tuple(size), mode="bilinear",
                                           align_corners=False)[0, 0].numpy()


def minmax(x: np.ndarray) -> np.ndarray:
    """Scale to [0, 1]; a constant map becomes all zeros (no pixel stands out)."""
    x = np.asarray(x, dtype=np.float64)
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def heatmap_to_mask(map_hw: np.ndarray, size: tuple[int, int], threshold: float = 0.5
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(score (H, W) in [0, 1], mask (H, W) bool) from a patch heatmap."""
    score = minmax(upsample(map_hw, size))
    return score, score > threshold


# -- neuron choice ---------------------------------------------------------------------------------
def aligned_neurons(pcs_ND: np.ndarray, class_emb_CD: np.ndarray, n_neurons: int,
                    signed: bool = True) -> np.ndarray:
    """(C, n_neurons) indices of the neurons most aligned with each class (largest first): by
    pc . class embedding (`signed`, default: neurons whose effect pushes towards the class; PCs are
    oriented so most effects project positively on them), or by |pc . class embedding| as the
    reference did. Rows of pcs may come from several layers: the caller keeps the index ->
    (layer, neuron) table, so nothing assumes contiguous layers."""
    pcs, emb = np.asarray(pcs_ND, np.float64), np.asarray(class_emb_CD, np.float64)
    if pcs.shape[1] != emb.shape[1]:
        raise UserError(f"neuron directions have {pcs.shape[1]} dimensions but the class embeddings "
                        f"{emb.shape[1]}: use the same CLIP model for both")
    n = min(n_neurons, len(pcs))
    score = emb @ pcs.T  # (C, N)
    if not signed:
        score = np.abs(score)
    return np.argsort(-score, axis=1, kind="stable")[:, :n]


def random_neurons(n_total: int, n_neurons: int, n_classes: int, seed: int = 0) -> np.ndarray:
    """The baseline: (C, n_neurons) neurons drawn uniformly without replacement, per class."""
    rng = np.random.default_rng(seed)
    n = min(n_neurons, n_total)
    return np.stack([rng.choice(n_total, n, replace=False) for _ in range(n_classes)])


def class_heatmap(token_effects_NTD: np.ndarray, class_emb_D: np.ndarray) -> np.ndarray:
    """(T,) per-patch score: the selected neurons' per-token second-order contributions (N, T, D)
    summed over neurons and projected on the class text embedding."""
    e = np.asarray(token_effects_NTD, np.float64)
    return e.sum(0) @ np.asarray(class_emb_D, np.float64)


# -- the ImageNet-segmentation file (gtsegs_ijcv.mat, Guillaumin et al.) ------------------------------
class ImagenetSegmentation:
    """Reads `gtsegs_ijcv.mat` (MATLAB v7.3, i.e. HDF5): 4,276 ImageNet images with foreground masks.

    Layout: `/value/img` (N, 1) object references, each to a uint8 array stored (3, W, H) (MATLAB's
    column-major H x W x 3); `/value/gt` (N, 1) references, each to a (1, 1) cell of references to a
    (W, H) mask (0 background, 1 foreground). `image(i)` is a PIL RGB image, `mask(i)` (H, W) bool.
    The file is opened lazily (so the object pickles into worker processes)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"no ImageNet-segmentation file at {self.path}: download gtsegs_ijcv.mat "
                            f"(the ImageNet-segmentation benchmark) and pass its path")
        self._file = None
        try:
            f = self._h5()
            self._n = int(f["/value/img"].shape[0])
            if f["/value/gt"].shape[0] != self._n:
                raise UserError(f"{self.path}: {self._n} images but {f['/value/gt'].shape[0]} masks")
        except (OSError, KeyError) as exc:
            raise UserError(f"{self.path} is not an ImageNet-segmentation .mat file (MATLAB v7.3 "
                            f"with /value/img and /value/gt): {exc}") from None

    def _h5(self):
        if self._file is None:
            try:
                import h5py
            except ImportError:
                raise UserError("reading .mat v7.3 files needs h5py: pip install h5py") from None
            self._file = h5py.File(self.path, "r")
        return self._file

    def __getstate__(self):
        return {**self.__dict__, "_file": None}

    def __len__(self) -> int:
        return self._n

    def _check(self, i: int) -> int:
        if not 0 <= i < self._n:
            raise UserError(f"image index {i} is out of range (the file has {self._n} images)")
        return i

    def image(self, i: int):
        from PIL import Image

        f = self._h5()
        arr = np.asarray(f[f["/value/img"][self._check(i), 0]]).transpose(2, 1, 0)
        return Image.fromarray(np.ascontiguousarray(arr.astype(np.uint8))).convert("RGB")

    def mask(self, i: int) -> np.ndarray:
        f = self._h5()
        cell = f[f["/value/gt"][self._check(i), 0]]
        return np.asarray(f[cell[0, 0]]).transpose(1, 0) > 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def write_imagenet_segmentation(path: str | Path, images: list[np.ndarray], masks: list[np.ndarray]
                                ) -> None:
    """Write images (H, W, 3) uint8 and masks (H, W) in the gtsegs_ijcv.mat layout (for tests and for
    packaging one's own data in that format)."""
    import h5py

    with h5py.File(path, "w") as f:
        ref = h5py.ref_dtype
        img_refs = f.create_dataset("/value/img", (len(images), 1), dtype=ref)
        gt_refs = f.create_dataset("/value/gt", (len(masks), 1), dtype=ref)
        for i, (im, m) in enumerate(zip(images, masks)):
            d = f.create_dataset(f"/#refs#/img{i}", data=np.asarray(im, np.uint8).transpose(2, 1, 0))
            img_refs[i, 0] = d.ref
            g = f.create_dataset(f"/#refs#/gt{i}", data=np.asarray(m, np.uint8).transpose(1, 0))
            cell = f.create_dataset(f"/#refs#/cell{i}", (1, 1), dtype=ref)
            cell[0, 0] = g.ref
            gt_refs[i, 0] = cell.ref


# -- class sets -------------------------------------------------------------------------------------
def class_set(spec: str) -> tuple[list[str], list[str]]:
    """(class names, prompts) for zero-shot classification: world-colors ("a red thing"),
    world-shapes ("a star"; the prompts world-clip was trained on), imagenet ("a photo of a ..."),
    a comma-separated list, or a text file with one class per line (prompt "a photo of a {}")."""
    from ..concepts import load_concepts

    if spec in ("world-colors", "world-shapes"):
        from ..data.world import CONCEPTS

        cat = "color" if spec == "world-colors" else "shape"
        names = [c.phrase for c in CONCEPTS.by_category(cat)]
        fmt = "a {} thing" if cat == "color" else "a {}"
        return names, [fmt.format(n) for n in names]
    if spec == "imagenet":
        names = list(load_concepts("imagenet").texts)
    elif "," in spec:
        names = [s.strip() for s in spec.split(",") if s.strip()]
    elif Path(spec).is_file():
        names = list(load_concepts(spec).texts)
    else:
        raise UserError(f"unknown class set '{spec}': use world-colors, world-shapes, imagenet, a "
                        f"comma-separated list or a text file with one class per line")
    if len(names) < 2:
        raise UserError(f"class set '{spec}' needs at least two classes")
    return names, [f"a photo of a {n}" for n in names]


# -- data with foreground masks -----------------------------------------------------------------------
class MaskedImages:
    """(image, foreground mask) pairs: a `world:` spec (foreground = every object's pixels) or an
    ImageNet-segmentation .mat file (`imagenet-seg:PATH` or a path ending in .mat)."""

    def __init__(self, spec: str, limit: int | None = None):
        self.spec = spec
        if spec.startswith("imagenet-seg:") or spec.endswith(".mat"):
            self.mat = ImagenetSegmentation(spec.partition("imagenet-seg:")[2] or spec)
            self.probe, n = None, len(self.mat)
        else:
            from ..data import open_probe

            self.probe = open_probe(spec)
            if not hasattr(self.probe, "masks"):
                raise UserError(f"{spec} has no ground-truth masks: use a world: probe set or an "
                                f"ImageNet-segmentation file (imagenet-seg:PATH/gtsegs_ijcv.mat)")
            self.mat, n = None, len(self.probe)
        self.n = min(n, limit) if limit else n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if self.mat is not None:
            return self.mat.image(i), self.mat.mask(i)
        masks = self.probe.masks(i)
        background = next(m for k, m in masks.items() if k.startswith("background:"))
        return self.probe.read_image(i), ~background


# -- the whole pipeline ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SegmentConfig:
    n_neurons: int = 200
    classes: str = "world-colors"
    alignment: str = "signed"  # or "absolute" (the reference's |pc . class|)
    threshold: float = 0.5
    batch_size: int = 32
    seed: int = 0  # of the random-neuron baseline
    limit: int | None = None  # use only the first images

    def __post_init__(self):
        if self.n_neurons < 1 or self.batch_size < 1:
            raise UserError("--neurons and --batch-size must be at least 1")
        if self.alignment not in ("signed", "absolute"):
            raise UserError(f"--alignment must be signed or absolute (got {self.alignment!r})")
        if not 0 < self.threshold < 1:
            raise UserError(f"--threshold must be in (0, 1) (got {self.threshold})")

    def to_json(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def patch_grid(n_tokens: int) -> tuple[int, int]:
    """The (h, w) patch grid of a ViT with CLS first and a square grid of patches after it."""
    import math

    side = math.isqrt(n_tokens - 1)
    if side * side != n_tokens - 1:
        raise UserError(f"{n_tokens} tokens are not CLS + a square patch grid: this model's token "
                        f"layout is not supported for segmentation")
    return side, side


def segment(path, data: str, config: SegmentConfig = SegmentConfig(), layers=None,
            progress: bool = True) -> dict:
    """Zero-shot segmentation of `data` from the neurons with second-order effects in `path`, with
    the random-neuron baseline. Returns {"aligned": metrics, "random": metrics, "background":
    metrics of the all-background mask (for scale), "config": ...}."""
    import torch

    from ..describe.second_order import second_order_results
    from ..describe.text_decomposition import model_of
    from .effects import SecondOrderLens
    from .vit import ClipViT

    results = second_order_results(path, layers)
    target, scorer = model_of(results[0])
    vit = ClipViT.from_target(target)
    lenses = [SecondOrderLens(vit, r.block, scale=r.meta["key"]["scale"]) for r in results]
    names, prompts = class_set(config.classes)
    class_emb = scorer.encode_texts(prompts).float().cpu()  # (C, D) unit length
    pcs = np.concatenate([np.asarray(r.pc) for r in results])
    offsets = np.cumsum([0] + [r.n_neurons for r in results])
    choice = {"aligned": aligned_neurons(pcs, class_emb.numpy(), config.n_neurons,
                                         signed=config.alignment == "signed"),
              "random": random_neurons(len(pcs), config.n_neurons, len(names), config.seed)}
    scores = {k: SegmentationScores() for k in (*choice, "background")}
    items = MaskedImages(data, config.limit)
    size = scorer.preprocess.size
    predicted = np.zeros(len(items), np.int64)
    steps = range(0, len(items), config.batch_size)
    if progress:
        from rich.progress import track

        steps = track(steps, description="segment", transient=True)
    with torch.no_grad():
        for s in steps:
            batch = [items[i] for i in range(s, min(s + config.batch_size, len(items)))]
            # a square input (no crop), so the patch grid covers the whole image and its mask
            pixels = torch.stack([scorer.preprocess(im.convert("RGB").resize((size, size)))
                                  for im, _ in batch]).to(scorer.device)
            pred = (scorer.encode_images(pixels).float().cpu() @ class_emb.T).argmax(1)
            predicted[s:s + len(batch)] = pred.numpy()
            direction = class_emb[pred]  # (B, D): each image's predicted class
            traces = [lens.trace(pixels) for lens in lenses]
            for kind, sel in choice.items():
                heat = _heat(lenses, traces, sel[pred.numpy()], offsets, direction)
                grid = patch_grid(heat.shape[1])
                for b, (_, truth) in enumerate(batch):
                    score, mask = heatmap_to_mask(heat[b, 1:].reshape(grid), truth.shape,
                                                  config.threshold)
                    scores[kind].add(mask, truth, score)
            for _, truth in batch:  # the trivial answer "all background", for scale
                scores["background"].add(np.zeros_like(truth), truth, np.zeros(truth.shape))
    return {**{k: v.summary() for k, v in scores.items()},
            "n_images": len(items), "classes": config.classes,
            "predicted_counts": {names[c]: int((predicted == c).sum()) for c in np.unique(predicted)},
            "layers": [r.layer for r in results], "data": data, "config": config.to_json()}


def _heat(lenses, traces, selected_BM: np.ndarray, offsets: np.ndarray, direction):
    """(B, T) summed per-token contributions of each image's selected neurons (global ids over the
    concatenated layers, `selected_BM`), projected on each image's direction."""
    import torch

    heat = None
    for li, (lens, tr) in enumerate(zip(lenses, traces)):
        lo, hi = offsets[li], offsets[li + 1]
        local = [sel[(sel >= lo) & (sel < hi)] - lo for sel in selected_BM]
        union = np.unique(np.concatenate(local)) if any(len(x) for x in local) else np.zeros(0, int)
        if len(union) == 0:
            continue
        maps = lens.token_maps(tr, direction, neurons=torch.as_tensor(union))  # (B, n, T)
        member = torch.zeros(maps.shape[:2], dtype=maps.dtype)
        for b, x in enumerate(local):
            member[b, np.searchsorted(union, x)] = 1
        part = (maps.cpu() * member[..., None]).sum(1)
        heat = part if heat is None else heat + part
    if heat is None:
        raise UserError("no neuron was selected for segmentation")
    return heat.double().numpy()
