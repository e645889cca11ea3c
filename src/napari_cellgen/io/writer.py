"""npe2 writers: Labels and Image layers to TIFF, keeping the layer's scale (as nm when known)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .tiff import nm_per_unit
from .tiff_write import write_tiff


def pixel_size_for(meta: dict, ndim: int) -> tuple[tuple[float, ...] | None, str]:
    """``(pixel_size, unit)`` of the spatial axes from a layer's state (``scale``, ``units``)."""
    nspatial = min(ndim, 3)
    scale = [float(s) for s in (meta.get("scale") or [1.0] * ndim)][-nspatial:]
    units = list(meta.get("units") or [])[-nspatial:]
    factors = [nm_per_unit(str(u)) for u in units]
    if len(factors) == nspatial and all(f is not None for f in factors):
        return tuple(s * f for s, f in zip(scale, factors, strict=True)), "nm"
    stored = (meta.get("metadata") or {}).get("pixel_size_nm")
    if stored and len(stored) == nspatial and np.allclose(stored, scale):
        return tuple(float(v) for v in stored), "nm"
    if any(s != 1.0 for s in scale):
        return tuple(scale), "pixel"
    return None, "nm"


def _base(data):
    return data[0] if isinstance(data, list) else data  # multiscale: the full-resolution level


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """Write a Labels layer as an ImageJ TIFF (uint8/uint16 when the ids fit), zlib-compressed."""
    data = _base(data)
    pixel_size, unit = pixel_size_for(meta, data.ndim)
    return [str(write_tiff(path, data, pixel_size, unit=unit, labels=True, compression="zlib"))]


def write_image(path: str, data: Any, meta: dict) -> list[str]:
    """Write an Image layer as an uncompressed ImageJ TIFF (so large stacks reopen memory-mapped)."""
    data = _base(data)
    rgb = bool(meta.get("rgb"))
    pixel_size, unit = pixel_size_for(meta, data.ndim - 1 if rgb else data.ndim)
    return [str(write_tiff(path, data, pixel_size, unit=unit, rgb=rgb, compression=None))]
