"""`zoo:synthetic-units`: units whose true concept is known, computed from the world's masks (MAIA).

Every unit is one of three kinds over the world's concepts (`neuronatlas.data.world.CONCEPTS`):

- mono(c):      map = mask(c)
- OR(c1, c2):   map = mask(c1) | mask(c2)   (pixel union)
- AND(c1, c2):  map = mask(c1) & mask(c2)   (pixel intersection: pixels of objects that have both
                attributes, e.g. "red AND circle" fires on red circles only; c1 and c2 are object
                attributes of two different categories among shape, color, texture, size, position,
                so the intersection is possible; it is empty unless both are in the image)

The masks are rendered at `grid * 8` pixels, combined pixel by pixel as above, then area-averaged to
the `grid x grid` feature map (each cell = the fraction of its pixels the unit's concept covers), plus
Gaussian noise of standard deviation `noise`, drawn from a generator seeded by (seed, probe index):
an image gets the same values whatever batch it is in, so recording and re-running agree exactly.

Units: every concept once as mono (39), then `n_or` OR and `n_and` AND pairs drawn without repeats
from `random.Random(f"synthetic-units/{seed}")` (defaults 36 + 36: 111 units, all six categories).
The layer to record is `units` (conv layout (B, U, grid, grid)); unit `units:i` has the true label
`target.truth` row i (columns unit, truth, kind, concepts: concept ids joined by "|").
Recording such a target writes RUN/truth.parquet, which `Run.units` joins as the `truth` column.

The units read the probe's ground truth, not pixels: they can only be recorded on `world:` probe sets
(`Target.forward_batch` reads the batch's probe and indices); `forward(pixels)` returns zeros of the
right shape (layer discovery).
"""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.world import CONCEPTS
from ..errors import UserError
from .inputs import ImageBatch
from .target import Preprocess, Target
from .zoo import zoo_entry

OBJECT_CATEGORIES = ("shape", "color", "texture", "size", "position")
KINDS = ("mono", "or", "and")


def concept_label(concept_id: str) -> str:
    """The words a label uses for a world concept: its caption phrase ("horizontally striped")."""
    return CONCEPTS[concept_id].phrase


def choose_units(seed: int = 0, n_or: int = 36, n_and: int = 36) -> list[tuple[str, tuple[str, ...]]]:
    """[(kind, concept ids)] in unit order: all monos, then OR pairs, then AND pairs."""
    rng = random.Random(f"synthetic-units/{seed}")
    ids = list(CONCEPTS.ids())
    units: list[tuple[str, tuple[str, ...]]] = [("mono", (c,)) for c in ids]
    seen: set[tuple[str, str]] = set()

    def draw(kind: str, pool_a: list[str], pool_b, n: int):
        tries = 0
        while n > 0 and tries < 100_000:
            tries += 1
            a = rng.choice(pool_a)
            b = rng.choice(pool_b(a))
            key = (kind, *sorted((a, b)))
            if a == b or key in seen:
                continue
            seen.add(key)
            units.append((kind, (a, b)))
            n -= 1

    draw("or", ids, lambda a: ids, n_or)
    obj = [c for c in ids if CONCEPTS[c].category in OBJECT_CATEGORIES]
    draw("and", obj, lambda a: [c for c in obj if CONCEPTS[c].category != CONCEPTS[a].category], n_and)
    return units


def truth_table(units: list[tuple[str, tuple[str, ...]]], layer: str = "units"):
    import pandas as pd

    sep = {"mono": "", "or": " OR ", "and": " AND "}
    return pd.DataFrame({
        "unit": [f"{layer}:{i}" for i in range(len(units))],
        "truth": [sep[k].join(concept_label(c) for c in cs) for k, cs in units],
        "kind": [k for k, _ in units],
        "concepts": ["|".join(cs) for _, cs in units],
    })


class UnitLayer(nn.Module):
    """(B, C, S, S) concept masks + (B, U, g, g) noise -> (B, U, g, g) unit maps."""

    def __init__(self, units, concept_ids: list[str], grid: int):
        super().__init__()
        pos = {c: i for i, c in enumerate(concept_ids)}
        self.grid = grid
        self.register_buffer("a", torch.tensor([pos[cs[0]] for _, cs in units]), persistent=False)
        self.register_buffer("b", torch.tensor([pos[cs[-1]] for _, cs in units]), persistent=False)
        self.register_buffer("kind", torch.tensor([KINDS.index(k) for k, _ in units]),
                             persistent=False)

    def forward(self, masks: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        ma, mb = masks[:, self.a], masks[:, self.b]
        kind = self.kind.view(1, -1, 1, 1)
        pixel = torch.where(kind == 1, torch.maximum(ma, mb), torch.where(kind == 2, ma * mb, ma))
        return F.adaptive_avg_pool2d(pixel, self.grid) + noise


class SyntheticUnits(nn.Module):
    def __init__(self, units, concept_ids: list[str], grid: int):
        super().__init__()
        self.units = UnitLayer(units, concept_ids, grid)

    def forward(self, masks: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.units(masks, noise)


def build_synthetic(seed: int = 0, n_or: int = 36, n_and: int = 36, grid: int = 8,
                    noise: float = 0.05, size: int = 64) -> Target:
    """The synthetic-units Target (see the module docstring); `size` is the input side in pixels
    (the pixels are ignored, so small is cheap)."""
    units = choose_units(seed, n_or, n_and)
    concept_ids = list(CONCEPTS.ids())
    model = SyntheticUnits(units, concept_ids, grid).eval()
    mask_size = grid * 8
    n_units = len(units)

    def forward(pixels: torch.Tensor):
        b = pixels.shape[0]
        masks = torch.zeros(b, len(concept_ids), mask_size, mask_size, device=pixels.device)
        return model(masks, torch.zeros(b, n_units, grid, grid, device=pixels.device))

    def forward_batch(batch: ImageBatch):
        probe, pixels = batch.probe, batch.pixels
        if batch.indices is None or not (hasattr(probe, "masks") and hasattr(probe, "scene")):
            raise UserError(f"zoo:synthetic-units computes its units from world concept masks, but "
                            f"the probe set {getattr(probe, 'spec', probe)} has none: record it on a "
                            f"world: probe set (e.g. --data world:n=1000,size=64)")
        indices = [int(i) for i in np.asarray(batch.indices).reshape(-1)]
        masks = np.zeros((len(indices), len(concept_ids), mask_size, mask_size), np.float32)
        noise_maps = np.zeros((len(indices), n_units, grid, grid), np.float32)
        for j, i in enumerate(indices):
            for key, m in probe.masks(i, mask_size).items():
                if key in CONCEPTS:
                    masks[j, concept_ids.index(key)] = m
            if noise:
                rng = np.random.default_rng([seed, i])
                noise_maps[j] = rng.normal(0.0, noise, (n_units, grid, grid))
        device = pixels.device
        return model(torch.from_numpy(masks).to(device), torch.from_numpy(noise_maps).to(device))

    config = {"seed": seed, "n_or": n_or, "n_and": n_and, "grid": grid, "noise": noise}
    return Target(
        spec="zoo:synthetic-units", model=model,
        preprocess=Preprocess(size=size, mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bilinear"),
        forward=forward, forward_batch=forward_batch, family="synthetic",
        weights="synthetic:" + ",".join(f"{k}={v}" for k, v in config.items()),
        truth=truth_table(units), extras={"config": config})


@zoo_entry("synthetic-units", "111 units with known concept labels, computed from world masks "
           "(needs a world: probe set)", 64, "random", "seed 0")
def build(weights: str | None = None, random_weights: bool = False) -> Target:
    """The ZOO factory: the default configuration (seed 0, 111 units, 8x8 grid, noise 0.05)."""
    return build_synthetic()
