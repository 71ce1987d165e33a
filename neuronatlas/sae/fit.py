"""`train_sae`: a model, a layer and a probe set in; a trained, measured SAE folder out.

The folder holds train.json (what was asked: rerunning with other settings refuses), checkpoint.pt
while training, then cfg.json + sae_weights.safetensors (SAELens format), neuronatlas.json and
metrics.json. Rerunning the same command resumes from the last checkpoint, or returns the finished
SAE at once.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from ..errors import UserError
from .config import SAEConfig, TrainConfig, write_json
from .format import CFG_FILE, load_sae, save_sae
from .sources import ModelSource
from .trainer import CHECKPOINT, Trainer

TRAIN_FILE, METRICS_FILE = "train.json", "metrics.json"


def _pick_layer(target, layer: str):
    points = target.select([layer])
    if len(points) != 1:
        names = ", ".join(p.name for p in points[:5])
        raise UserError(f"--layer '{layer}' matches {len(points)} hook points ({names}...): an SAE "
                        f"reads one layer, give its exact name")
    return points[0]


def _claim(out: Path, request: dict) -> None:
    path = out / TRAIN_FILE
    if path.exists():
        if json.loads(path.read_text()) != request:
            raise UserError(f"{out} holds an SAE trained with other settings: pass another --out, "
                            f"or the same options to resume it")
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, request)


def train_sae(model, layer: str, data, out: str | Path, sae: SAEConfig | None = None,
              config: TrainConfig | None = None, *, weights: str | None = None,
              random_weights: bool = False, seed: int = 0, device: str | None = None,
              num_workers: int | None = 0, eval_images: int = 64, show_progress: bool = False):
    """Train an SAE on `layer` of `model` over the probe set `data`; returns it (eval mode).

    sae: architecture and size (d_in and d_sae are filled in from the layer); config: training
    settings (TrainConfig fields); `layer` overrides config.layer.
    """
    import torch

    from ..data import open_probe
    from ..models import Target, load_target
    from .metrics import downstream, row_metrics

    out = Path(out)
    config = replace(config or TrainConfig(), layer=layer)
    if isinstance(model, Target):
        target, spec = model, model.spec
    else:
        torch.manual_seed(seed)
        target, spec = load_target(model, weights=weights, random_weights=random_weights,
                                   device=device), model
    probe = open_probe(data)
    if len(probe) == 0:
        raise UserError(f"probe set {data} has no images: point --data at a folder or world:n=...")
    point = _pick_layer(target, layer)
    d_in = point.n_units
    base = sae or SAEConfig(d_in=d_in, d_sae=d_in)
    sae_cfg = replace(base, d_in=d_in, d_sae=config.features or config.expansion * d_in)
    request = {"model": spec, "weights": weights, "random_weights": random_weights, "seed": seed,
               "data": str(data), "n_images": len(probe), "sae": sae_cfg.to_json(),
               "train": config.to_json()}
    _claim(out, request)
    if (out / CFG_FILE).exists() and (out / METRICS_FILE).exists():
        return load_sae(out)
    source = ModelSource(target, probe, point, config.tokens, config.image_batch, num_workers)
    trainer = Trainer(sae_cfg, config, source, out, show_progress)
    trained = trainer.run()
    # metrics on (up to) eval_images of the probe set, in a fixed order
    indices = list(range(min(eval_images, len(probe))))
    from .activations import stream_rows

    rows = row_metrics(trained, stream_rows(target, probe, point, config.tokens, indices,
                                            config.image_batch, num_workers))
    mean_row = rows.pop("mean_row")
    metrics = {**rows, **downstream(trained, target, probe, point, config.tokens, indices,
                                    config.image_batch, mean_row),
               "eval_images": len(indices), "steps": trainer.state.step}
    save_sae(trained, out, metadata={"model_name": spec, "hook_name": point.name},
             record={"model": spec, "layer": point.name, "tokens": config.tokens,
                     "train_config": config.to_json(), "log": trainer.state.log})
    write_json(out / METRICS_FILE, metrics)
    (out / CHECKPOINT).unlink(missing_ok=True)
    return load_sae(out)

