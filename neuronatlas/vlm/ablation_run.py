"""`neuronatlas vlm ablate`: token ablation over a probe set whose images come with object masks
(the procedural world: exact masks), written to RUN/vlm/ablation/NAME/ (neuronatlas.run.vlm).

For every object of every image, in each setting:
- polling   "is there a {c}?" (the world's question form; HF checkpoints: "Is there a {c} in the
            image?") -> right if "yes" is a word of the greedy answer; tracked token "yes";
- vqa       "what color is the {shape}?" (objects whose shape is unique in the scene) -> right if
            the first generated token is non-empty and starts the expected answer (the reference
            counted an empty token as right); tracked token: the answer's first token;
- generative the model's caption -> right if one object phrase names the object's colour and shape.
Inclusion (the paper's rule): only objects the model gets right on the clean image are ablated.
Token sets: object patches + buffer b (b in `buffers`), random tokens of the same count per object
and buffer ("random-matched"), high-norm tokens, random-k and integrated-gradients top-k (polling:
the "yes" logit) for k in `ks`. Tables: parts/ (resumable, one per batch of images) ->
images.parquet (one row per object x setting x token set), curves.parquet (accuracy and mean drop
of the tracked token's probability per setting x token set x k), curves.png.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..data import open_probe
from ..errors import UserError
from ..run.vlm import ExperimentStore, load_mean_vector, mean_vector_path, save_mean_vector
from .ablation import (MeanVector, ablated, high_norm_tokens, image_features, integrated_gradients,
                       mean_vector_key, object_tokens, positions_mask, random_tokens)
from .answers import greedy, token_id
from .subject import VlmSubject

SETTINGS = ("polling", "vqa", "generative")
TOKEN_SETS = ("object", "random-matched", "high-norm", "random", "ig")


@dataclass(frozen=True)
class AblationConfig:
    settings: tuple[str, ...] = ("polling", "vqa")
    token_sets: tuple[str, ...] = ("object", "random-matched", "high-norm", "random")
    buffers: tuple[int, ...] = (0, 1, 2)
    ks: tuple[int, ...] = (5, 10, 20, 40)
    baseline: str = "mean"  # mean | zeros
    mean_images: int = 200  # first images of the probe set that the mean vector averages
    ig_steps: int = 50
    max_new_tokens: int = 3
    polling: str | None = None  # template with {c}; None: the model's own (see module doc)
    seed: int = 0
    batch_size: int = 16  # images per part
    limit: int | None = None

    def __post_init__(self):
        bad = [s for s in self.settings if s not in SETTINGS]
        if bad:
            raise UserError(f"unknown setting {bad[0]!r}: choose from {', '.join(SETTINGS)}")
        bad = [s for s in self.token_sets if s not in TOKEN_SETS]
        if bad:
            raise UserError(f"unknown token set {bad[0]!r}: choose from {', '.join(TOKEN_SETS)}")
        if self.baseline not in ("mean", "zeros"):
            raise UserError(f"--baseline must be mean or zeros (got {self.baseline!r})")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "AblationConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass
class Item:
    """One object asked about: world objects have colour and shape; COCO objects a category."""

    index: int
    obj: int
    color: str | None
    shape: str | None
    mask: np.ndarray = field(repr=False)  # at the model's input size (as the model sees the image)
    unique_pair: bool = True
    unique_shape: bool = True
    category: str | None = None

    @property
    def name(self) -> str:
        return self.category if self.category is not None else f"{self.color} {self.shape}"


def probe_items(subject: VlmSubject, probe, index: int) -> list[Item]:
    """The objects of image `index` with masks as the model sees them (world or COCO)."""
    size = int(subject.config.vision_config.image_size)
    if hasattr(probe, "scene"):
        return world_items(probe, index, size)
    if hasattr(probe, "objects"):
        return coco_items(subject, probe, index)
    raise UserError(f"token ablation and knockout need images with object masks: use a world: or "
                    f"coco: probe set (got {probe.spec})")


def coco_items(subject: VlmSubject, probe, index: int) -> list[Item]:
    """COCO objects, masks mapped through the model's own resize / crop (crop correction: an object
    the crop cuts away has an empty mask and is skipped)."""
    from PIL import Image

    out = []
    for ann_id, name, mask in probe.objects(index):
        seen = np.asarray(subject.seen(Image.fromarray(mask.astype(np.uint8) * 255).convert("RGB")))
        m = seen[..., 0] > 127
        if m.any():
            out.append(Item(index, ann_id, None, None, m, True, False, category=name))
    return out


def world_items(probe, index: int, size: int) -> list[Item]:
    """The objects of world image `index` that some mask pixel shows, masks at the model's size."""
    from ..data.world.vocab import phrase

    if not hasattr(probe, "scene"):
        raise UserError(f"token ablation needs images with object masks: use a world: probe set "
                        f"(got {probe.spec})")
    scene = probe.scene(index)
    masks = probe.masks(index, size)
    pairs = Counter((o.color, o.shape) for o in scene.objects)
    shapes = Counter(o.shape for o in scene.objects)
    out = []
    for k, o in enumerate(scene.objects):
        m = masks[f"object:{k}"]
        if m.any():
            out.append(Item(index, k, phrase("color", o.color), phrase("shape", o.shape), m,
                            pairs[o.color, o.shape] == 1, shapes[o.shape] == 1))
    return out


def names_object(caption: str, item: Item) -> bool:
    """One object phrase of a caption (split at ' and ') has the object's colour and shape words;
    a COCO object: its category name is in the caption (the reference's rule)."""
    if item.category is not None:
        return item.category.lower() in caption.lower()
    return any(f" {item.color} " in f" {p} " and f" {item.shape}" in f" {p} "
               for p in caption.lower().split(" and "))


def vqa_right(first_token: str, expected: str) -> bool:
    t = first_token.strip().lower()
    return bool(t) and expected.lower().split()[0].startswith(t)


def question(subject: VlmSubject, cfg: AblationConfig, setting: str, item: Item):
    """(prompt, expected answer, tracked token id) or None when the item does not fit the setting."""
    if setting == "polling":
        if not item.unique_pair:
            return None
        template = cfg.polling or ("is there a {c}?" if subject.name == "zoo:world-llava"
                                   else "Is there a {c} in the image?")
        return template.format(c=item.name), "yes", token_id(subject, "yes")
    if setting == "vqa":  # world objects only (COCO has no questions here)
        if not item.unique_shape or item.shape is None:
            return None
        return f"what color is the {item.shape}?", item.color, token_id(subject, item.color)
    return None, item.name, None  # generative: the caption prompt


def right(setting: str, text: str, first_token: str, expected: str, item: Item) -> bool:
    if setting == "polling":
        return "yes" in text.lower().replace(",", " ").replace(".", " ").split()
    if setting == "vqa":
        return vqa_right(first_token, expected)
    return names_object(text, item)


def mean_vector(subject: VlmSubject, probe, run, cfg: AblationConfig) -> tuple[torch.Tensor, int]:
    """The mean post-projector image token over the first `mean_images` images, cached in the run."""
    n = min(cfg.mean_images, len(probe))
    path = mean_vector_path(run, mean_vector_key(subject, probe.fingerprint(), n))
    got = load_mean_vector(path)
    if got is None:
        acc = None
        for s in range(0, n, cfg.batch_size):
            pixels = torch.stack([subject.transform(probe.read_image(i))
                                  for i in range(s, min(s + cfg.batch_size, n))])
            f = image_features(subject, pixels)
            acc = acc or MeanVector(f.shape[-1])
            acc.update(f)
        save_mean_vector(path, acc.mean, acc.count, dict(model=subject.name, data=probe.spec, images=n))
        got = load_mean_vector(path)
    return torch.from_numpy(got[0]), got[1]


def _token_sets(subject, cfg, setting, item, feats, ig_scores):
    """[(token_set, param, tokens)] for one included item."""
    n_img = subject.n_image_tokens
    out = []
    for b in cfg.buffers:
        obj = object_tokens(subject, item.mask, b)
        if "object" in cfg.token_sets:
            out.append(("object", b, obj))
        if "random-matched" in cfg.token_sets:
            out.append(("random-matched", b,
                        random_tokens(n_img, len(obj), f"{cfg.seed}/{item.index}/{item.obj}/{b}")))
    if "high-norm" in cfg.token_sets:
        out.append(("high-norm", -1, high_norm_tokens(feats)))
    for k in cfg.ks:
        if "random" in cfg.token_sets:
            out.append(("random", k, random_tokens(n_img, k, f"{cfg.seed}/{item.index}/k{k}")))
        if ig_scores is not None:
            out.append(("ig", k, ig_scores.topk(min(k, n_img)).indices.sort().values.tolist()))
    return out


def _prob(answers, j: int, q) -> float:
    """The tracked token's probability (NaN in the generative setting, which tracks none)."""
    return float("nan") if q[2] is None else float(answers.target_prob[j])


def ablate_batch(subject, cfg, probe, indices, vector) -> list[dict]:
    pix = {i: subject.transform(probe.read_image(i)) for i in indices}
    feats = image_features(subject, torch.stack([pix[i] for i in indices]))
    feats = {i: feats[j] for j, i in enumerate(indices)}
    items = [it for i in indices for it in probe_items(subject, probe, i)]
    rows: list[dict] = []
    for setting in cfg.settings:
        qs = [(it, question(subject, cfg, setting, it)) for it in items]
        qs = [(it, q) for it, q in qs if q is not None]
        if not qs:
            continue
        targets = [q[2] if q[2] is not None else 0 for _, q in qs]
        pixels = torch.stack([pix[it.index] for it, _ in qs])
        max_new = 40 if setting == "generative" else cfg.max_new_tokens
        clean = greedy(subject, pixels, [q[0] for _, q in qs], max_new, targets=targets)
        jobs = []
        for j, (it, q) in enumerate(qs):
            ok = right(setting, clean.text[j], clean.first_token[j], q[1], it)
            base = dict(index=it.index, object=it.obj, name=it.name, setting=setting,
                        prompt=q[0] or "", expected=q[1], clean_answer=clean.text[j],
                        clean_right=ok, clean_prob=_prob(clean, j, q))
            rows.append(dict(base, token_set="none", param=0, k=0, answer=clean.text[j], right=ok,
                             prob=_prob(clean, j, q)))
            if not ok:
                continue  # the paper's inclusion rule: right on the clean image
            ig = None
            if "ig" in cfg.token_sets and setting == "polling":
                inputs = subject.inputs(pix[it.index][None], [q[0]])
                ig = integrated_gradients(subject, inputs, q[2], vector if vector is not None
                                          else torch.zeros(feats[it.index].shape[-1]), cfg.ig_steps)
            for name, param, toks in _token_sets(subject, cfg, setting, it, feats[it.index], ig):
                jobs.append((base, it, q, targets[j], name, param, toks))
        for s in range(0, len(jobs), 4 * cfg.batch_size):
            chunk = jobs[s:s + 4 * cfg.batch_size]
            tokens = [c[6] for c in chunk]
            px = torch.stack([pix[c[1].index] for c in chunk])

            def intervention(inputs, tokens=tokens):
                return ablated(subject, positions_mask(subject, inputs["input_ids"], tokens), vector)

            ans = greedy(subject, px, [c[2][0] for c in chunk], max_new, intervention,
                         targets=[c[3] for c in chunk])
            for j, (base, it, q, _t, name, param, toks) in enumerate(chunk):
                rows.append(dict(base, token_set=name, param=int(param), k=len(toks),
                                 answer=ans.text[j],
                                 right=right(setting, ans.text[j], ans.first_token[j], q[1], it),
                                 prob=_prob(ans, j, q)))
    return rows


def curves(df):
    """Accuracy (share of included objects still right) and mean drop of the tracked token's
    probability, per setting x token set x param (buffer for object sets, k otherwise)."""
    import pandas as pd

    inc = df[df.clean_right & (df.token_set != "none")].copy()
    if not len(inc):
        return pd.DataFrame(columns=["setting", "token_set", "param", "k", "accuracy", "n", "prob_drop"])
    inc["drop"] = inc.clean_prob - inc.prob
    g = inc.groupby(["setting", "token_set", "param"], sort=True)
    out = g.agg(k=("k", "mean"), accuracy=("right", "mean"), n=("right", "size"),
                prob_drop=("drop", "mean")).reset_index()
    return out


def plot_curves(cur, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys(cur.setting))
    fig, axes = plt.subplots(1, max(1, len(settings)), figsize=(5 * max(1, len(settings)), 4),
                             squeeze=False)
    for ax, s in zip(axes[0], settings):
        c = cur[cur.setting == s]
        for name, g in c.groupby("token_set"):
            g = g.sort_values("k")
            ax.plot(g.k, g.accuracy, marker="o", label=name)
        ax.set_title(s)
        ax.set_xlabel("ablated image tokens (k)")
        ax.set_ylabel("accuracy on initially-right objects")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_ablation(subject: VlmSubject, data: str, out, cfg: AblationConfig = AblationConfig(),
                 name: str = "default", show_progress: bool = True) -> ExperimentStore:
    import pandas as pd

    probe = open_probe(data)
    if len(probe) == 0:
        raise UserError(f"probe set {data} is empty")
    n = len(probe) if cfg.limit is None else min(cfg.limit, len(probe))
    store = ExperimentStore(out, "ablation", name)
    store.create_or_verify(dict(format="neuronatlas-vlm-ablation", key=dict(
        model=subject.name, data=probe.fingerprint(), config=cfg.to_json()), data_spec=data,
        status="computing", created=time.time()))
    vector, count = (None, 0) if cfg.baseline == "zeros" else mean_vector(subject, probe, out, cfg)
    starts = list(range(0, n, cfg.batch_size))
    todo = [(p, s) for p, s in enumerate(starts) if not store.part_path(p).exists()]
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(starts), initial=len(starts) - len(todo), desc="ablation", unit="batch")
    for part, s in todo:
        rows = ablate_batch(subject, cfg, probe, list(range(s, min(s + cfg.batch_size, n))), vector)
        store.write_part(part, pd.DataFrame(rows))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    df = store.read_parts()
    store.write_table("images", df)
    cur = curves(df)
    store.write_table("curves", cur)
    plot_curves(cur, store.plot_path("curves"))
    store.update_meta(status="complete", n_images=n, mean_vector_count=count,
                      summary=cur.to_dict("records"))
    return store
