"""Display helpers that never read a whole lazy stack: percentile contrast and a stack summary."""

from __future__ import annotations

from math import prod
from typing import Any

import numpy as np


def sample_planes(data, max_planes: int = 5, max_pixels: int = 512 * 512, include=()) -> np.ndarray:
    """Pixels from up to ``max_planes`` evenly spaced planes, each strided to ≈ ``max_pixels``.

    Works for numpy arrays, memmaps, dask arrays and :class:`LazyStack` alike: only the
    chosen planes are read. ``include`` adds planes (flat indices over the leading axes),
    e.g. the one on screen.
    """
    shape = tuple(data.shape)
    if len(shape) < 2:
        return np.asarray(data).ravel()
    lead = shape[:-2]
    n = prod(lead)
    picks = {int(i) for i in np.linspace(0, n - 1, min(n, max_planes)).round()}
    picks |= {int(i) for i in include if 0 <= int(i) < n}
    h, w = shape[-2:]
    step = max(1, int(np.ceil(np.sqrt(h * w / max_pixels))))
    out = []
    for flat in sorted(picks):
        idx = np.unravel_index(flat, lead) if lead else ()
        plane = np.asarray(data[tuple(int(i) for i in idx)])
        out.append(np.asarray(plane[::step, ::step]).ravel())
    return np.concatenate(out)


def percentile_limits(data, low: float = 1.0, high: float = 99.5, include=()) -> tuple[float, float]:
    """Contrast limits at the ``low`` and ``high`` percentiles of a subsample of ``data``."""
    if not 0 <= low < high <= 100:
        raise ValueError(f"need 0 <= low < high <= 100, got low={low}, high={high}")
    values = sample_planes(data, include=include)
    values = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(values, [low, high]))
    if hi <= lo:  # flat image: keep a valid, non-empty range
        hi = lo + 1.0
    return lo, hi


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def storage_of(data) -> str:
    """ "memory", "memmap", "lazy" (read on demand) for an array-like."""
    if isinstance(data, np.memmap):
        return "memmap"
    if isinstance(data, np.ndarray):
        return "memory"
    return "lazy"


def describe(data, metadata: dict | None = None, scale=None) -> dict[str, Any]:
    """Shape, dtype, pixel size and memory footprint of an image, as strings for display."""
    metadata = metadata or {}
    shape = tuple(int(s) for s in data.shape)
    dtype = np.dtype(data.dtype)
    nbytes = prod(shape) * dtype.itemsize
    storage = storage_of(data)
    px = metadata.get("pixel_size_nm")
    if px:
        pixel = " × ".join(f"{v:g}" for v in px) + " nm"
    elif scale is not None and any(float(s) != 1.0 for s in scale):
        pixel = " × ".join(f"{float(s):g}" for s in scale) + " (scale, unit unknown)"
    else:
        pixel = "unknown (1 pixel)"
    where = {"memory": "in memory", "memmap": "memory-mapped from disk", "lazy": "read slice by slice"}
    return {
        "shape": " × ".join(str(s) for s in shape),
        "dtype": str(dtype),
        "pixel_size": pixel,
        "memory": f"{format_bytes(nbytes)} ({where[storage]})",
        "nbytes": nbytes,
        "storage": storage,
    }
