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


def predict_plane(
    fn: Callable[[np.ndarray], np.ndarray],
    plane: np.ndarray,
    tile: int = 256,
    overlap: int = 32,
    batch_size: int = 4,
    divisor: int = 1,
) -> Generator[Progress, None, np.ndarray]:
    """Apply ``fn`` (batch (B, C, th, tw) -> (B, th, tw)) tile by tile to ``plane`` (C, H, W).

    The plane is reflect-padded by half the overlap on every side (so border pixels
    see context too) and up to at least one tile; overlapping tiles are blended with
    cosine weights. Yields one :class:`Progress` per batch; returns the (H, W) result.
    """
    if plane.ndim != 3:
        raise ValueError(f"expected a (C, H, W) plane, got shape {plane.shape}")
    _, h, w = plane.shape
    if h == 0 or w == 0:
        raise ValueError("cannot predict an empty image")
    halo = overlap // 2
    th = min(_round_up(tile, divisor), _round_up(h + 2 * halo, divisor))
    tw = min(_round_up(tile, divisor), _round_up(w + 2 * halo, divisor))
    overlap = max(0, min(overlap, min(th, tw) - divisor))
    ph, pw = max(h + 2 * halo, th), max(w + 2 * halo, tw)
    pad = ((0, 0), (halo, ph - h - halo), (halo, pw - w - halo))
    padded = np.pad(plane, pad, mode="reflect" if min(h, w) > 1 else "edge")
    ys = _starts(ph, th, max(1, th - overlap))
    xs = _starts(pw, tw, max(1, tw - overlap))
    origins = [(y, x) for y in ys for x in xs]
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
    return (acc / wsum)[halo : halo + h, halo : halo + w]
