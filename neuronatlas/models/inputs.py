"""What a Target takes in one forward pass: typed batches, not an untyped dict.

- `ImageBatch`: preprocessed pixels, with the probe indices they came from (and the probe set, for
  targets whose units read its annotations, like zoo:synthetic-units).
- `ImageTextBatch`: the same plus one text prompt for every image (a VLM recorded past its vision
  tower: the language model's units depend on the question as much as on the image).

A Target says which one it needs (`Target.inputs`) and builds it (`Target.make_batch`), so the shard
loop, the exemplar replay and the labelers hand every model the same object.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch


@dataclass(frozen=True, eq=False)
class ImageBatch:
    pixels: torch.Tensor
    """(B, 3, H, W): the images after the Target's own preprocessing."""
    indices: np.ndarray | None = None
    """(B,) probe indices of the rows (None for images that are not from a probe set)."""
    probe: object | None = None
    """The probe set the rows come from (a `ProbeSet`); read only by targets that need its
    annotations. Not copied: a reference."""

    def __post_init__(self):
        if self.pixels.ndim != 4:
            raise ValueError(f"pixels must be (B, 3, H, W), got shape {tuple(self.pixels.shape)}")
        if self.indices is not None and len(self.indices) != len(self.pixels):
            raise ValueError(f"{len(self.indices)} indices for {len(self.pixels)} images")

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    def to(self, device) -> "ImageBatch":
        """The same batch with its pixels on `device` (non-blocking from pinned memory)."""
        return replace(self, pixels=self.pixels.to(device, non_blocking=True))


@dataclass(frozen=True, eq=False)
class ImageTextBatch(ImageBatch):
    prompt: str = ""
    """The text every image is paired with (a VLM's question or instruction), as the user wrote it:
    the Target's family turns it into tokens with the model's own template."""


INPUT_KINDS = {"images": ImageBatch, "images+text": ImageTextBatch}
"""The kind a run records (run.json model.inputs) -> its batch type."""


def kind_of(cls: type[ImageBatch]) -> str:
    return next(k for k, v in INPUT_KINDS.items() if v is cls)
