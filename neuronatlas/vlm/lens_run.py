"""`neuronatlas vlm logit-lens`: the logit lens over a probe set, stored in the run as Parquet.

RUN/vlm/logit-lens/ (neuronatlas.run.vlm.LensStore): one part per batch of images, long format, one
row per (image, layer, position, rank): index, image_id, layer, position, input_id, input_token,
kind (image | text), patch (grid cell row * grid + col of an image token; -1 for CLS and text),
rank, token_id, token, prob. Rerunning the same command resumes at the first missing part; another
model / probe set / top-k / prompt in the same directory is refused.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data import open_probe
from ..errors import UserError
from ..run.vlm import LensStore
from .logit_lens import LensConfig, lens_topk, residuals
from .subject import VlmSubject, language_parts


def lens_rows(subject: VlmSubject, indices, image_ids, inputs, probs, ids) -> dict:
    """Columns of the Parquet part of one batch (numpy, vectorised over layers x positions x k)."""
    ids_bt, mask = inputs["input_ids"].numpy(), inputs["attention_mask"].numpy()
    probs, ids = probs.numpy(), ids.numpy()
    n_layers, _, _, k = probs.shape
    cols: dict[str, list] = {c: [] for c in ("index", "image_id", "layer", "position", "input_id",
                                             "kind", "patch", "rank", "token_id", "prob")}
    for b in range(len(indices)):
        t_b = int(mask[b].sum())
        inp = ids_bt[b, :t_b]
        is_img = inp == subject.image_token_id
        feat = np.cumsum(is_img) - 1  # k-th image feature at each image position
        patch = np.where(is_img, feat - int(subject.has_cls), -1)
        n = n_layers * t_b * k
        layer = np.repeat(np.arange(n_layers), t_b * k)
        pos = np.tile(np.repeat(np.arange(t_b), k), n_layers)
        cols["index"].append(np.full(n, int(indices[b])))
        cols["image_id"].append(np.full(n, str(image_ids[b]), dtype=object))
        cols["layer"].append(layer)
        cols["position"].append(pos)
        cols["input_id"].append(inp[pos])
        cols["kind"].append(np.where(is_img[pos], "image", "text").astype(object))
        cols["patch"].append(patch[pos])
        cols["rank"].append(np.tile(np.arange(k), n_layers * t_b))
        cols["token_id"].append(ids[:, b, :t_b].reshape(-1))
        cols["prob"].append(probs[:, b, :t_b].reshape(-1).astype(np.float32))
    out = {c: np.concatenate(v) for c, v in cols.items()}
    vocab = {int(t): subject.decode_token(int(t)) for t in np.unique(np.concatenate(
        [out["token_id"], out["input_id"]]))}
    out["token"] = np.array([vocab[int(t)] for t in out["token_id"]], dtype=object)
    out["input_token"] = np.array([vocab[int(t)] for t in out["input_id"]], dtype=object)
    for c in ("index", "layer", "position", "input_id", "patch", "rank", "token_id"):
        out[c] = out[c].astype(np.int32 if c != "index" else np.int64)
    return out


def lens_meta(subject: VlmSubject, probe, data: str, cfg: LensConfig) -> dict:
    key = dict(model=subject.name, data=probe.fingerprint(), top_k=cfg.top_k, prompt=cfg.prompt,
               batch_size=cfg.batch_size)
    n_layers = len(language_parts(subject.model).layers) + 1
    return dict(format="neuronatlas-logit-lens", key=key, data_spec=data, config=cfg.to_json(),
                n_images=len(probe), n_layers=n_layers, grid=subject.grid, has_cls=subject.has_cls,
                n_image_tokens=subject.n_image_tokens, image_token_id=subject.image_token_id,
                status="computing")


def run_logit_lens(subject: VlmSubject, data: str, out, cfg: LensConfig = LensConfig(),
                   show_progress: bool = True, limit: int | None = None) -> LensStore:
    """Lens every image of `data` (the first `limit`); resumable. Returns the store."""
    import pyarrow as pa

    probe = open_probe(data)
    if len(probe) == 0:
        raise UserError(f"probe set {data} is empty; point --data at images")
    n = len(probe) if limit is None else min(limit, len(probe))
    store = LensStore(out)
    store.create_or_verify(lens_meta(subject, probe, data, cfg))
    starts = list(range(0, n, cfg.batch_size))
    todo = [(p, s) for p, s in enumerate(starts) if not store.part_path(p).exists()]
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(starts), initial=len(starts) - len(todo), desc="logit lens",
                   unit="batch")
    for part, s in todo:
        idx = list(range(s, min(s + cfg.batch_size, n)))
        images = [probe.read_image(i) for i in idx]
        pixels = torch.stack([subject.transform(im) for im in images])
        inputs = subject.inputs(pixels, [cfg.prompt] * len(idx))
        hs, _ = residuals(subject, inputs)
        probs, ids = lens_topk(subject, hs, cfg.top_k, cfg.chunk)
        for i, im in zip(idx, images):
            store.write_image(i, subject.seen(im))
        cols = lens_rows(subject, idx, [probe.items[i].image_id for i in idx], inputs, probs, ids)
        store.write_part(part, pa.table(cols))  # the part last: it marks the batch as done
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    store.update_meta(status="complete", n_done=n)
    return store
