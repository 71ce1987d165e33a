"""Several probe sets recorded as one (e.g. the world plus the bundled photos).

Image ids are kept as they are (sources already prefix theirs, e.g. `world/0/3`, `photos/chelsea`);
a clash between two sources is an error rather than a silent overwrite.
"""

from __future__ import annotations

import bisect

from ..errors import UserError
from .probe import ImageItem, ProbeSet


class ConcatProbeSet(ProbeSet):
    kind = "concat"

    def __init__(self, parts: list[ProbeSet]):
        self.parts = parts
        self.spec = " + ".join(p.spec for p in parts)
        self.kind = "concat(" + ",".join(p.kind for p in parts) + ")"
        self.items: list[ImageItem] = [it for p in parts for it in p.items]
        self.starts = []
        n = 0
        for p in parts:
            self.starts.append(n)
            n += len(p)
        ids = [it.image_id for it in self.items]
        if len(set(ids)) != len(ids):
            raise UserError(f"the probe sets {self.spec} share image ids; give each a separate "
                            f"folder or record them as separate runs")

    def _locate(self, index: int) -> tuple[ProbeSet, int]:
        part = bisect.bisect_right(self.starts, index) - 1
        return self.parts[part], index - self.starts[part]

    def read_bytes(self, index: int) -> bytes:
        part, i = self._locate(index)
        return part.read_bytes(i)

    def load(self, index: int):
        part, i = self._locate(index)
        return part.load(i)

    def read_image(self, index: int):
        part, i = self._locate(index)
        return part.read_image(i)

    def fingerprint(self) -> str:
        import hashlib

        return hashlib.sha256("+".join(p.fingerprint() for p in self.parts).encode()).hexdigest()[:16]
