"""What a run records about itself: the identity key (what must match to resume or merge) and the
descriptive metadata (layouts, versions, config)."""

from __future__ import annotations

import datetime as _dt
import platform
from importlib import metadata

from ..data.probe import ProbeSet
from ..models.target import Target
from ..run import FORMAT, FORMAT_VERSION
from .basis import UnitView, state_digest
from .config import RecordConfig
from .stats import HIST_BINS, HIST_LIMIT, HIST_SCALE

_PACKAGES = ("neuronatlas", "torch", "torchvision", "timm", "open_clip_torch", "transformers",
             "numpy", "pillow")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def build_meta(target: Target, probe: ProbeSet, views: list[UnitView], poolings: dict[str, str],
               cfg: RecordConfig) -> dict:
    points = [v.point for v in views]
    key = {
        "model": {"spec": target.spec, "weights": target.weights,
                  "seed": cfg.seed if target.weights == "random" else None,
                  # another prompt is another recording (image-only runs keep their old key)
                  **({"prompt": target.prompt} if target.prompt is not None else {})},
        "probe": {"kind": probe.kind, "fingerprint": probe.fingerprint(), "n_images": len(probe)},
        "layers": [[p.name, poolings[p.name]] for p in points],
        "k": cfg.k,
        "save_acts": cfg.save_acts,
        "dedup": cfg.dedup,
        "sharding": [cfg.n_shards, cfg.shard_mode],
    }
    encoded = [v for v in views if v.encoder is not None]
    if encoded:  # identity runs keep the key they always had
        key["basis"] = {v.name: {"name": v.encoder.name, "kind": v.encoder.to_json().get("kind"),
                                 "digest": state_digest(v.encoder.state())} for v in encoded}
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "status": "recording",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "key": key,
        "model": target.describe(),
        "probe": {"spec": probe.spec, "kind": probe.kind, "n_images": len(probe)},
        "layers": [_layer_meta(v, poolings[v.name]) for v in views],
        "histogram": {"bins": HIST_BINS, "scale": HIST_SCALE, "limit": HIST_LIMIT,
                      "spacing": "asinh(x/scale), evenly from -limit to +limit"},
        "config": cfg.to_json(),
        "seed": cfg.seed,
        "versions": package_versions(),
    }


def _layer_meta(v: UnitView, pooling: str) -> dict:
    """One recorded layer: its hook output (shape, layout) and its units (n_units, basis)."""
    p = v.point
    out = {"name": p.name, "shape": list(p.shape), "n_units": v.n_units, "pooling": pooling,
           "layout": p.layout.to_json()}
    if v.encoder is not None:
        out["basis"] = v.encoder.to_json()  # the units are its features; RUN/basis/LAYER.npz
    return out


def listing_table(probe: ProbeSet):
    """The probe listing as an image table (statuses are filled in when the run completes)."""
    import pandas as pd

    items = probe.items
    return pd.DataFrame({
        "index": range(len(items)),
        "image_id": [it.image_id for it in items],
        "path": [it.path for it in items],
        "label": [it.label for it in items],
        "status": "pending",
    })
