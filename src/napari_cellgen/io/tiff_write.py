"""Write EM stacks as ImageJ-compatible TIFF, atomically, slice by slice. No Qt, no napari.

``write_tiff(path, data, pixel_size_nm)`` picks a dtype ImageJ reads (uint8, uint16, float32)
when the values fit, records the pixel size (resolution, spacing, unit) so that Fiji and
:func:`~.tiff.read_tiff` both get it back, marks label images, and writes through a temporary
file renamed into place (:func:`~napari_cellgen._paths.atomic_file`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from math import prod
from pathlib import Path
from typing import Any

import numpy as np

from .tiff import LAYER_KEY, _positive

_IMAGEJ_AXES = {2: "YX", 3: "ZYX", 4: "TZYX", 5: "TZCYX"}


def _minmax(data) -> tuple[float, float]:
    if isinstance(data, np.ndarray):
        return (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
    lo, hi = np.inf, -np.inf
    for idx in np.ndindex(*data.shape[:-2]):
        plane = np.asarray(data[idx])
        lo, hi = min(lo, float(plane.min())), max(hi, float(plane.max()))
    return lo, hi


def _imagej_dtype(data, labels: bool) -> np.dtype | None:
    """The ImageJ-compatible dtype (uint8, uint16, float32) to store ``data`` in, or None."""
    dtype = np.dtype(data.dtype)
    if dtype in (np.uint8, np.uint16, np.float32):
        return dtype
    if dtype.kind == "b":
        return np.dtype(np.uint8)
    if dtype.kind in "ui":
        lo, hi = _minmax(data)
        if lo >= 0 and hi <= 255:
            return np.dtype(np.uint8)
        if lo >= 0 and hi <= 65535:
            return np.dtype(np.uint16)
        if not labels and dtype.itemsize <= 2:
            return np.dtype(np.float32)  # int8/int16 are exact in float32
        return None
    if dtype.kind == "f" and not labels:
        return np.dtype(np.float32)
    return None


def _sizes_from(pixel_size, ndim: int) -> dict[str, float]:
    if pixel_size is None:
        return {}
    values = np.atleast_1d(np.asarray(pixel_size, dtype=float)).tolist()
    if len(values) == 1:
        values = values * min(ndim, 3)
    values = values[-3:] if len(values) > 3 else values
    return {ax: float(v) for ax, v in zip("ZYX"[-len(values) :], values, strict=True) if _positive(v)}


def _planes(data, dtype, rgb: bool = False) -> Iterator[np.ndarray]:
    for idx in np.ndindex(*data.shape[: -3 if rgb else -2]):
        yield np.asarray(data[idx]).astype(dtype, copy=False)


def write_tiff(
    path: str | os.PathLike,
    data,
    pixel_size_nm=None,
    *,
    unit: str = "nm",
    labels: bool = False,
    compression: str | None = "zlib",
    axes: str | None = None,
    rgb: bool = False,
) -> Path:
    """Write ``data`` (2D … 5D, numpy or lazy array-like) as a TIFF, atomically.

    ``pixel_size_nm`` is one number or one per spatial axis ((z,) y, x); with ``unit``
    other than "nm" it is a plain scale in that unit. uint8/uint16/float32 data (and
    integer data that fits uint16) go to an ImageJ hyperstack with resolution, spacing and
    unit, which Fiji and :func:`read_tiff` understand; ``labels=True`` marks the file so
    :func:`read_tiff` returns ``layer_type="labels"``. Labels beyond uint16 are written as a
    plain TIFF with the pixel size in its JSON description. ``rgb=True`` writes the last
    axis (3 or 4) as colour samples. Returns the written path.
    """
    import tifffile

    path = Path(path)
    shape = tuple(int(n) for n in data.shape)
    if len(shape) < 2 or 0 in shape:
        raise ValueError(f"cannot write an array of shape {shape} as an image")
    nspatial = len(shape) - 1 if rgb else len(shape)
    if rgb and (shape[-1] not in (3, 4) or nspatial < 2):
        raise ValueError(f"an RGB(A) image needs a last axis of 3 or 4 samples, got shape {shape}")
    axes = axes or (_IMAGEJ_AXES.get(nspatial, "") + "S" if rgb else _IMAGEJ_AXES.get(nspatial))
    sizes = _sizes_from(pixel_size_nm, nspatial)
    out_dtype = _imagej_dtype(data, labels) if axes else None
    if rgb and out_dtype != np.uint8:
        out_dtype = None  # ImageJ RGB is 8-bit only
    kwargs: dict[str, Any] = {"compression": compression, "photometric": "rgb" if rgb else "minisblack"}
    if out_dtype is not None:
        md: dict[str, Any] = {"axes": axes}
        if "Z" in sizes and "Z" in axes:
            md["spacing"] = sizes["Z"]
        if sizes:
            md["unit"] = unit
        if labels:
            md["Properties"] = {LAYER_KEY: "labels"}
        kwargs.update(imagej=True, metadata=md)
        if "X" in sizes and "Y" in sizes:
            kwargs["resolution"] = (1.0 / sizes["X"], 1.0 / sizes["Y"])
    else:
        out_dtype = np.dtype(data.dtype)
        md = {"axes": axes} if axes else {}
        if labels:
            md[LAYER_KEY] = "labels"
        if sizes and unit == "nm":
            md["pixel_size_nm"] = [sizes[ax] for ax in "ZYX" if ax in sizes]
        kwargs.update(metadata=md, bigtiff=prod(shape) * out_dtype.itemsize > 2**32 - 2**25)
    from .._paths import atomic_file

    with atomic_file(path) as tmp:  # keeps an existing file's permissions
        if isinstance(data, np.ndarray):
            tifffile.imwrite(tmp, data.astype(out_dtype, copy=False), ome=False, **kwargs)
        else:
            planes = _planes(data, out_dtype, rgb)
            tifffile.imwrite(tmp, planes, shape=shape, dtype=out_dtype, ome=False, **kwargs)
    return path
