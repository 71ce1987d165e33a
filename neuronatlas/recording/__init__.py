"""Recording: one pass over a probe set that keeps, per unit, exemplars and statistics."""

from .config import RecordConfig, parse_shard

__all__ = ["RecordConfig", "finalize", "parse_shard", "record", "shard_indices"]


def __getattr__(name):  # keep `import neuronatlas.recording.stats` light: load the pass on demand
    if name in ("record", "shard_indices"):
        from . import recorder
        return getattr(recorder, name)
    if name == "finalize":
        from .merge import finalize
        return finalize
    raise AttributeError(name)
