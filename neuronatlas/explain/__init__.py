"""Why this prediction: one image's output attributed to the run's units, chained through its layers.

    result = na.explain("runs/r", 17)      # or an image id / file; target_class=..., text=...
    result["sentence"]                     # "predicted 'red circle' (p 0.93): mostly 'red' (...)"

See docs/methods/explain.md.
"""

from .explanation import explain

__all__ = ["explain"]
