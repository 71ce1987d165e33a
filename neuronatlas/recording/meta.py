"""What a run records about itself: the identity key (what must match to resume or merge) and the
descriptive metadata (layouts, versions, config)."""

from __future__ import annotations

import datetime as _dt
import platform
from importlib import metadata

from ..data.probe import ProbeSet
from ..models.target import HookPoint, Target
from ..run import FORMAT, FORMAT_VERSION
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


def build_meta(target: Target, probe: ProbeSet, points: list[HookPoint], poolings: dict[str, str],
               cfg: RecordConfig) -> dict:
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
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "status": "recording",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "key": key,
        "model": target.describe(),
        "probe": {"spec": probe.spec, "kind": probe.kind, "n_images": len(probe)},
        "layers": [{"name": p.name, "shape": list(p.shape), "n_units": p.n_units,
                    "pooling": poolings[p.name], "layout": p.layout.to_json()} for p in points],
        "histogram": {"bins": HIST_BINS, "scale": HIST_SCALE, "limit": HIST_LIMIT,
                      "spacing": "asinh(x/scale), evenly from -limit to +limit"},
        "config": cfg.to_json(),
        "seed": cfg.seed,
        "versions": package_versions(),
    }


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
