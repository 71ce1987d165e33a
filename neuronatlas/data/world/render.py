"""Rendering a Scene at any resolution, with per-pixel masks for every concept present.

Objects are drawn at `factor` x the output size (factor = max(2, ceil(256 / size)), so 32 px is drawn
at 256 and 224 px at 448) and box-averaged down: edges are anti-aliased and shapes stay recognisable
at 32-64 px. Backgrounds are generated at the output size from a coarse random grid (their look does
not depend on the resolution). Textures are two-tone: the object's colour and a darker shade (black
gets a dark gray), with a period of 0.1 x the image side.

Masks are computed from the same supersampled drawing: a pixel belongs to the object (or the
background) that covers most of it, so masks partition the image and reflect occlusion. Concept masks
(shape/color/texture/size/position) are the union of the visible pixels of the objects with that
concept; `background:KIND` is every pixel no object covers; `object:K` is object K's visible pixels.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from .scene import Scene, WorldObject
from .vocab import concept_id, rgb

PERIOD = 0.10  # texture period, fraction of the image side
CHECKER = 0.065  # checker square side
SPECKLE = 0.035  # speckle cell side
SHADE = {"white": (165, 165, 165), "black": (90, 90, 90)}  # texture second tone; others: 0.5 x colour


def supersample_factor(size: int) -> int:
    return max(2, -(-256 // size))


def _shade(color: str) -> tuple[int, int, int]:
    return SHADE.get(color) or tuple(int(c * 0.5) for c in rgb(color))


def _heart() -> list[tuple[float, float]]:
    t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    x, y = x / 16.5, (y - (y.max() + y.min()) / 2) / ((y.max() - y.min()) / 2) * 0.95
    return list(zip(x.tolist(), y.tolist()))


def _star(points=5, inner=0.45) -> list[tuple[float, float]]:
    out = []
    for k in range(2 * points):
        r = 1.0 if k % 2 == 0 else inner
        a = -math.pi / 2 + k * math.pi / points
        out.append((r * math.cos(a), r * math.sin(a) + 0.1))  # +0.1 centres the star's box
    return out


# outlines in the unit box [-1, 1]^2, y pointing down
POLYGONS = {
    "square": [(-0.86, -0.86), (0.86, -0.86), (0.86, 0.86), (-0.86, 0.86)],
    "triangle": [(0.0, -0.92), (1.0, 0.82), (-1.0, 0.82)],
    "star": _star(),
    "cross": [(-0.32, -0.95), (0.32, -0.95), (0.32, -0.32), (0.95, -0.32), (0.95, 0.32), (0.32, 0.32),
              (0.32, 0.95), (-0.32, 0.95), (-0.32, 0.32), (-0.95, 0.32), (-0.95, -0.32),
              (-0.32, -0.32)],
    "heart": _heart(),
    "diamond": [(0.0, -1.0), (0.9, 0.0), (0.0, 1.0), (-0.9, 0.0)],
    "arrow": [(-1.0, -0.28), (0.1, -0.28), (0.1, -0.85), (1.0, 0.0), (0.1, 0.85), (0.1, 0.28),
              (-1.0, 0.28)],
}


@lru_cache(maxsize=256)
def shape_mask(shape: str, n: int) -> np.ndarray:
    """Boolean n x n mask of `shape` filling its box (cached: one per shape and pixel size)."""
    im = Image.new("L", (n, n), 0)
    draw = ImageDraw.Draw(im)

    def px(pts):
        return [((x + 1) / 2 * n, (y + 1) / 2 * n) for x, y in pts]

    if shape == "circle":
        draw.ellipse([0, 0, n - 1, n - 1], fill=255)
    elif shape == "crescent":
        draw.ellipse([0, 0, n - 1, n - 1], fill=255)
        draw.ellipse(px([(-0.45, -0.95), (1.25, 0.75)]), fill=0)
    else:
        draw.polygon(px(POLYGONS[shape]), fill=255)
    mask = np.asarray(im) > 127
    mask.setflags(write=False)
    return mask


def texture_mask(obj: WorldObject, u: np.ndarray, v: np.ndarray) -> np.ndarray | None:
    """Where the second tone goes; u (1, n) and v (n, 1) are offsets from the centre (image fractions)."""
    t, ph = obj.texture, obj.phase
    if t == "solid":
        return None
    if t == "hstripes":
        return np.broadcast_to((v / PERIOD + ph) % 1 < 0.5, (v.size, u.size))
    if t == "vstripes":
        return np.broadcast_to((u / PERIOD + ph) % 1 < 0.5, (v.size, u.size))
    if t == "dstripes":
        return ((u + v) / (PERIOD * math.sqrt(2)) + ph) % 1 < 0.5
    if t == "dotted":
        du, dv = (u / PERIOD + ph) % 1 - 0.5, (v / PERIOD + ph) % 1 - 0.5
        return du * du + dv * dv < 0.3 ** 2
    if t == "checkered":
        return (np.floor(u / CHECKER + ph) + np.floor(v / CHECKER + ph)) % 2 == 1
    if t == "grid":
        return ((u / PERIOD + ph) % 1 < 0.25) | ((v / PERIOD + ph) % 1 < 0.25)
    if t == "speckled":
        cells = int(math.ceil(2 * obj.radius / SPECKLE)) + 1
        grid = np.random.default_rng(obj.seed).random((cells, cells)) < 0.35
        iu = np.clip(((u + obj.radius) / SPECKLE).astype(int), 0, cells - 1)
        iv = np.clip(((v + obj.radius) / SPECKLE).astype(int), 0, cells - 1)
        return grid[iv, iu]
    raise ValueError(f"unknown texture {t!r}")


def _coarse(rng: np.random.Generator, h: int, w: int, size: int) -> np.ndarray:
    """Random values in [0, 1) on an h x w grid, smoothly resized to size x size (float32)."""
    grid = Image.fromarray((rng.random((h, w)) * 255).astype(np.uint8))
    return np.asarray(grid.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0


def render_background(kind: str, seed: int, size: int) -> np.ndarray:
    """size x size x 3 uint8 background, deterministic from (kind, seed)."""
    rng = np.random.default_rng(seed)
    if kind == "gray":
        return np.full((size, size, 3), 128, np.uint8)
    if kind == "gradient":
        a = rng.uniform(0, 2 * math.pi)
        lo, hi = np.float32(rng.uniform(55, 95)), np.float32(rng.uniform(165, 205))
        tint = rng.uniform(-12, 12, 3).astype(np.float32)
        xs = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
        t = np.cos(a) * xs[None, :] + np.sin(a) * xs[:, None]
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        out = lo + (hi - lo) * t[..., None] + tint
    elif kind == "noise":
        out = 128 + 110 * (_coarse(rng, 24, 24, size)[..., None] - 0.5)
        out = np.repeat(out, 3, axis=2)
    elif kind == "grass":  # vertical blades: fine across, long down
        g = _coarse(rng, 6, 40, size)[..., None]
        out = np.array([30, 95, 25], np.float32) + g * np.array([45, 90, 30], np.float32)
    elif kind == "sand":
        g = 0.6 * _coarse(rng, 40, 40, size) + 0.4 * _coarse(rng, 10, 10, size)
        out = (np.array([180, 160, 112], np.float32)
               + (g[..., None] - 0.5) * np.array([70, 65, 50], np.float32))
    else:
        raise ValueError(f"unknown background {kind!r}")
    return np.clip(out, 0, 255).astype(np.uint8)


def _draw(scene: Scene, size: int, with_labels: bool):
    f = supersample_factor(size)
    big = size * f
    bg = render_background(scene.background, scene.background_seed, size)
    canvas = np.array(Image.fromarray(bg).resize((big, big), Image.NEAREST))
    labels = np.zeros((big, big), np.uint8) if with_labels else None
    boxes = []
    for k, obj in enumerate(scene.objects):
        n = max(2, int(round(2 * obj.radius * big)))
        x0 = min(max(int(round(obj.x * big - n / 2)), 0), big - n)
        y0 = min(max(int(round(obj.y * big - n / 2)), 0), big - n)
        mask = shape_mask(obj.shape, n)
        coords = (np.arange(n, dtype=np.float32) + 0.5 - n / 2) / big
        second = texture_mask(obj, coords[None, :], coords[:, None])
        region = canvas[y0:y0 + n, x0:x0 + n]
        color = np.array(rgb(obj.color), np.uint8)
        if second is not None:
            color = np.where(second[..., None], np.array(_shade(obj.color), np.uint8), color)
        np.copyto(region, color, where=mask[..., None])
        if labels is not None:
            labels[y0:y0 + n, x0:x0 + n][mask] = k + 1
        boxes.append((x0, y0, n))
    image = Image.fromarray(canvas).reduce(f) if f > 1 else Image.fromarray(canvas)
    return image, labels, boxes, f


def render_image(scene: Scene, size: int) -> Image.Image:
    """The scene as a size x size RGB image (no masks: the fast path for probing)."""
    return _draw(scene, _check_size(size), with_labels=False)[0]


def render_labels(scene: Scene, size: int) -> tuple[Image.Image, np.ndarray]:
    """(image, label map): label 0 is background, K+1 is object K (the majority cover of each pixel)."""
    size = _check_size(size)
    image, labels, boxes, f = _draw(scene, size, with_labels=True)
    cover = np.zeros((len(boxes) + 1, size, size), np.int32)
    for k, (x0, y0, n) in enumerate(boxes):  # coverage counts inside each box, on the output grid
        X0, Y0, X1, Y1 = x0 // f, y0 // f, -(-(x0 + n) // f), -(-(y0 + n) // f)
        sub = labels[Y0 * f:Y1 * f, X0 * f:X1 * f] == k + 1
        cover[k + 1, Y0:Y1, X0:X1] = sub.reshape(Y1 - Y0, f, X1 - X0, f).sum(axis=(1, 3))
    cover[0] = f * f - cover[1:].sum(axis=0)
    return image, cover.argmax(axis=0).astype(np.uint8)


def masks_from_labels(scene: Scene, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean H x W masks: `object:K`, the background kind, and every concept of every object."""
    masks = {concept_id("background", scene.background): labels == 0}
    for k, obj in enumerate(scene.objects):
        m = labels == k + 1
        masks[f"object:{k}"] = m
        for cid in obj.concept_ids():
            masks[cid] = masks[cid] | m if cid in masks else m.copy()
    return masks


def render(scene: Scene, size: int) -> tuple[Image.Image, dict[str, np.ndarray]]:
    """(RGB image, masks) of the scene at size x size pixels; see `masks_from_labels`."""
    image, labels = render_labels(scene, size)
    return image, masks_from_labels(scene, labels)


def _check_size(size: int) -> int:
    size = int(size)
    if size < 8:
        raise ValueError(f"image size {size} is too small; use at least 8 pixels (32-64 for small models)")
    return size
