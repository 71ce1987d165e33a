"""User-facing errors.

A `UserError` is a mistake the user can fix (bad spec, unknown layer, empty probe set...). The CLI
prints its message on one line, without a stack trace, and exits with code 2. Its message must name
the problem and the fix.
"""

from __future__ import annotations

import difflib


class UserError(Exception):
    """A problem in the user's input, with a one-line message that says how to fix it."""

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))  # always one line


def near_matches(name: str, candidates: list[str], n: int = 5) -> list[str]:
    """Closest candidate names, for 'did you mean' hints."""
    hits = difflib.get_close_matches(name, candidates, n=n, cutoff=0.4)
    if not hits:  # fall back to shared prefixes, useful for dotted module paths
        stem = name.split("*")[0].rstrip(".")
        hits = [c for c in candidates if stem and c.startswith(stem)][:n]
    return hits


class DiskFullError(UserError):
    """Out of disk space: nothing more can be written, so no retry or extra checkpoint."""
