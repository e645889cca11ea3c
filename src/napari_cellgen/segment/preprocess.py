"""Input normalisation and resolution changes shared by training and inference."""

from __future__ import annotations

import numpy as np


def percentile_range(img: np.ndarray, low: float = 1.0, high: float = 99.0, stride: int = 4):
    """The grey levels :func:`normalize` maps to 0 and 1: the image's ``low`` and ``high`` percentiles,
    taken on a strided subsample (enough, and bounded in cost)."""
    img = np.asarray(img)
    sample = img[..., ::stride, ::stride] if min(img.shape[-2:]) > 4 * stride else img
    sample = sample.astype(np.float32, copy=False)
    if not np.all(np.isfinite(sample)):
        raise ValueError("the image contains NaN or infinite values; fix or mask them before segmenting")
    lo, hi = np.percentile(sample, [low, high])
    return lo, hi


def normalize(img: np.ndarray, low: float = 1.0, high: float = 99.0, stride: int = 4) -> np.ndarray:
    """Per-image percentile normalisation to about [0, 1] (float32).

    Each Lucchi slice was contrast-stretched on its own, so statistics are taken
    per 2D image (:func:`percentile_range`).
    """
    img = np.asarray(img)
    lo, hi = percentile_range(img, low, high, stride)
    scale = 1.0 / (hi - lo) if hi > lo else 1.0
    return ((img.astype(np.float32) - lo) * scale).astype(np.float32)


def resize(planes: np.ndarray, shape: tuple[int, int], mode: str = "area") -> np.ndarray:
    """Resize (..., H, W) float arrays to ``shape`` with torch (area down, bilinear up)."""
    import torch
    from torch.nn import functional as F

    if tuple(planes.shape[-2:]) == tuple(shape):
        return planes
    lead = planes.shape[:-2]
    t = torch.from_numpy(np.ascontiguousarray(planes, dtype=np.float32)).reshape(1, -1, *planes.shape[-2:])
    kw = {} if mode == "area" else {"align_corners": False}
    out = F.interpolate(t, size=tuple(shape), mode=mode, **kw)
    return out.reshape(*lead, *shape).numpy()


def scaled_shape(shape: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))


def context_indices(z: int, n: int, k: int) -> list[int]:
    """Slice indices z-k..z+k, mirrored at the ends of a stack of ``n`` slices."""
    out = []
    for i in range(z - k, z + k + 1):
        if n == 1:
            out.append(0)
            continue
        while i < 0 or i >= n:
            i = -i if i < 0 else 2 * (n - 1) - i
        out.append(i)
    return out
