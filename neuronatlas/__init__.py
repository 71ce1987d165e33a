"""neuronatlas: explain what the units of vision models and VLMs respond to, and measure whether
each explanation is right.

    import neuronatlas as na
    run = na.record("timm:vit_tiny_patch16_224", "path/to/images", "runs/x", layers="blocks.*.mlp.fc1")
    run.units; run.topk("blocks.9.mlp.fc1:12"); na.exemplar_grids(run, "blocks.9.mlp.fc1:12", "g.png")

    from neuronatlas.describe import describe      # (subpackages of the same name: import the
    from neuronatlas.evaluate import evaluate      #  functions from them)
"""

__version__ = "0.1.0"

_API = {
    "open_run": ("neuronatlas.run", "open_run"),
    "Run": ("neuronatlas.run", "Run"),
    "record": ("neuronatlas.recording.recorder", "record"),
    "RecordConfig": ("neuronatlas.recording.config", "RecordConfig"),
    "finalize": ("neuronatlas.recording.merge", "finalize"),
    "load_target": ("neuronatlas.models", "load_target"),
    "open_probe": ("neuronatlas.data", "open_probe"),
    "exemplars": ("neuronatlas.recording.exemplars", "exemplars"),
    "exemplar_grids": ("neuronatlas.atlas.exemplars", "exemplar_grids"),
    "UserError": ("neuronatlas.errors", "UserError"),
}
__all__ = list(_API)


def __getattr__(name):  # lazy: `import neuronatlas` stays fast and optional deps stay optional
    if name in _API:
        import importlib

        module, attr = _API[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'neuronatlas' has no attribute {name!r}")
