"""Tiled, blended, streaming inference (``predict_with_halo``-style, plus soft blending).

Everything here works on one 2D plane of shape (C, H, W) at a time, so memory is
bounded by the size of one slice whatever the size of the stack.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

import numpy as np

from .._progress import Progress


def blend_window(tile: tuple[int, int], floor: float = 1e-3) -> np.ndarray:
    """Separable cosine (Hann) weights, never exactly zero so every pixel has weight."""
    ws = []
    for n in tile:
        x = (np.arange(n) + 0.5) / n
        ws.append(np.maximum(np.sin(np.pi * x) ** 2, floor))
    return np.outer(ws[0], ws[1]).astype(np.float32)


def _starts(length: int, tile: int, step: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def _round_up(n: int, d: int) -> int:
    return -(-n // d) * d


def tile_layout(h: int, w: int, tile: int, overlap: int, divisor: int = 1, border: int = 0):
    """Where the tiles of an (h, w) plane go.

    Returns ``(th, tw)`` (the tile shape), the padding ``((top, bottom), (left, right))``
    and the tile origins in the padded plane. The plane is padded by ``border`` on every
    side, then (split evenly) only as much as it needs to fill one tile and to be a
    multiple of ``divisor``; tiles overlap by ``overlap`` (less if the tile is smaller).
    """
    th = min(_round_up(tile, divisor), _round_up(h + 2 * border, divisor))
    tw = min(_round_up(tile, divisor), _round_up(w + 2 * border, divisor))
    overlap = max(0, min(overlap, min(th, tw) - divisor))
    ph, pw = max(h + 2 * border, th), max(w + 2 * border, tw)
    top = border + (ph - h - 2 * border) // 2
    left = border + (pw - w - 2 * border) // 2
    pad = ((top, ph - h - top), (left, pw - w - left))
    ys = _starts(ph, th, max(1, th - overlap))
    xs = _starts(pw, tw, max(1, tw - overlap))
    return (th, tw), pad, [(y, x) for y in ys for x in xs]


def predict_plane(
    fn: Callable[[np.ndarray], np.ndarray],
    plane: np.ndarray,
    tile: int = 256,
    overlap: int = 32,
    batch_size: int = 4,
    divisor: int = 1,
    border: int = 0,
) -> Generator[Progress, None, np.ndarray]:
    """Apply ``fn`` (batch (B, C, th, tw) -> (B, th, tw)) tile by tile to ``plane`` (C, H, W).

    Tiles lie inside the plane wherever it is at least one tile wide; a smaller plane
    (or one that is not a multiple of ``divisor``) is reflect-padded just enough.
    ``border`` adds a reflected margin of that many pixels on every side. It is 0 by
    default because the segmenters are trained on crops from inside the image, whose
    edges the network sees zero-padded: a mirrored margin at the image border is
    something they never saw, and cost the shipped model 0.01 validation IoU
    (``benchmarks/tta_views.py --border``). Overlapping tiles are blended with cosine
    weights. Yields one :class:`Progress` per batch; returns the (H, W) result.
    """
    if plane.ndim != 3:
        raise ValueError(f"expected a (C, H, W) plane, got shape {plane.shape}")
    _, h, w = plane.shape
    if h == 0 or w == 0:
        raise ValueError("cannot predict an empty image")
    (th, tw), pad, origins = tile_layout(h, w, tile, overlap, divisor, border)
    padded = np.pad(plane, ((0, 0), *pad), mode="reflect" if min(h, w) > 1 else "edge")
    ph, pw = padded.shape[1:]
    window = blend_window((th, tw))
    acc = np.zeros((ph, pw), np.float32)
    wsum = np.zeros((ph, pw), np.float32)
    total = len(origins)
    for i in range(0, total, batch_size):
        chunk = origins[i : i + batch_size]
        batch = np.stack([padded[:, y : y + th, x : x + tw] for y, x in chunk])
        out = fn(batch)
        for (y, x), o in zip(chunk, out, strict=False):
            acc[y : y + th, x : x + tw] += o * window
            wsum[y : y + th, x : x + tw] += window
        yield Progress(min(i + batch_size, total), total, "tiles")
    (top, _), (left, _) = pad
    return (acc / wsum)[top : top + h, left : left + w]
