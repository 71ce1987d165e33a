"""Extensions outside the package: the modules named in $NEURONATLAS_PLUGINS (comma-separated) are
imported before a registry (labelers, metrics) is first read, so a labeler or metric in a file of
your own works from the command line:

    NEURONATLAS_PLUGINS=my_labeler neuronatlas describe RUN --method mine
"""

from __future__ import annotations

import importlib
import os

from .errors import UserError

PLUGINS_ENV = "NEURONATLAS_PLUGINS"


def load_plugins() -> None:
    """Import the modules named in $NEURONATLAS_PLUGINS (they register labelers or metrics)."""
    for mod in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(mod)
        except ImportError as exc:
            raise UserError(f"{PLUGINS_ENV} names module '{mod}', which does not import ({exc}): "
                            f"fix the name or put its folder on PYTHONPATH") from None
