"""``read_stack``: one entry point for TIFF files and folders of numbered slices. No Qt."""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ._lazy import LazyStack, to_gray
from .tiff import TIFF_SUFFIXES, ReadError, build_scale, is_tiff, read_tiff

SLICE_SUFFIXES = (*TIFF_SUFFIXES, ".png")
_DEFAULT_LIMIT = 1 << 30  # 1 GiB


def available_memory() -> int | None:
    """Bytes of RAM available now, or None when it cannot be told."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # psutil comes with napari; a bare core install may lack it
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None


def default_memory_limit() -> int:
    """Stacks larger than this many bytes open lazily: a quarter of free RAM, at most 1 GiB."""
    available = available_memory()
    if available is None:
        return _DEFAULT_LIMIT
    return int(min(_DEFAULT_LIMIT, available // 4))


def natural_key(name: str) -> list:
    """Sort key so that ``slice_2`` comes before ``slice_10``."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def slice_files(folder: str | os.PathLike) -> list[Path]:
    """The numbered image slices of ``folder`` in natural order (one extension, the commonest)."""
    folder = Path(folder)
    try:
        files = [
            p
            for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SLICE_SUFFIXES
        ]
    except OSError:
        return []
    if not files:
        return []
    kind = Counter("png" if p.suffix.lower() == ".png" else "tif" for p in files).most_common(1)[0][0]
    files = [p for p in files if ("png" if p.suffix.lower() == ".png" else "tif") == kind]
    return sorted(files, key=lambda p: natural_key(p.name))


def detect(path: str | os.PathLike) -> str | None:
    """ "tiff", "zarr" or "folder" when :func:`read_stack` understands ``path``, else None. Cheap."""
    p = Path(path)
    from .zarr_io import is_zarr

    if is_zarr(p):  # a zarr / OME-Zarr folder
        return "zarr"
    if p.is_dir():
        return "folder" if slice_files(p) else None
    if p.is_file() and is_tiff(p):
        return "tiff"
    return None


def stored_pixel_size(meta: dict | None) -> tuple[float, ...] | None:
    """The pixel size in nm a reader stored in ``meta`` (``pixel_size_nm``; older layers: ``pixel_size``)."""
    ps = (meta or {}).get("pixel_size_nm") or (meta or {}).get("pixel_size")
    return tuple(float(v) for v in ps) if ps else None


def volume_pixel_size(ps) -> tuple[float, float, float] | None:
    """``ps`` (nm) as a (z, y, x) voxel size, or None when it is missing or only 2D (no z to record)."""
    return tuple(float(v) for v in ps) if ps is not None and len(ps) == 3 else None


def read_stack(path: str | os.PathLike, *, memory_limit: int | None = None) -> tuple[Any, dict]:
    """Open an EM stack: ``(array_like, meta)``.

    ``path`` is a TIFF file (multi-page, BigTIFF, OME, ImageJ; 2D or ZYX) or a folder of
    numbered ``.tif``/``.png`` slices. Stacks larger than ``memory_limit`` bytes (default
    :func:`default_memory_limit`) are opened lazily. ``meta`` holds ``path``, ``format``,
    ``axes``, ``shape``, ``dtype``, ``storage`` ("memory", "memmap" or "lazy"), ``scale``
    (one value per axis), ``pixel_size_nm`` (per spatial axis, or None when unknown),
    ``unit``, ``layer_type`` ("image" or "labels"), ``warnings`` (things the user must be
    told, e.g. an RGB file converted to grayscale) and ``notes`` (assumptions made, e.g. a
    missing z spacing taken equal to x).

    Raises :class:`ReadError` (a ``ValueError``) with the file name and what to do for files
    that are not stacks, corrupt or truncated, and ``FileNotFoundError`` for missing paths.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist")
    if memory_limit is None:
        memory_limit = default_memory_limit()
    kind = detect(p)
    if kind == "tiff":
        return read_tiff(p, memory_limit=memory_limit)
    if kind == "folder":
        return read_folder(p, memory_limit=memory_limit)
    if kind == "zarr":  # always lazy and chunked, whatever its size
        from .zarr_io import read_zarr

        return read_zarr(p)
    if p.is_dir():
        raise ReadError(f"{p.name} holds no .tif, .tiff or .png slices.")
    raise ReadError(
        f"{p.name} is not a TIFF stack. napari-cellgen reads .tif/.tiff files (also OME and "
        "ImageJ) and folders of numbered .tif/.png slices; convert other formats in Fiji."
    )


def _read_slice(path: Path) -> tuple[np.ndarray, bool]:
    """One slice as a 2D array, and whether it was converted from RGB(A)."""
    try:
        if path.suffix.lower() == ".png":
            import imageio.v3 as iio

            arr = np.asarray(iio.imread(path))
        else:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                arr = tif.pages[0].asarray()
    except Exception as exc:
        raise ReadError(
            f"{path.name} could not be read ({type(exc).__name__}: {exc}); "
            "it looks corrupt or truncated: copy or export it again."
        ) from exc
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        return to_gray(arr), True
    if arr.ndim == 3 and arr.shape[-1] == 2:  # gray + alpha
        return arr[..., 0], False
    if arr.ndim != 2:
        raise ReadError(f"{path.name} has shape {arr.shape}; a slice must be a 2D image.")
    return arr, False


def read_folder(folder: str | os.PathLike, *, memory_limit: int | None = None) -> tuple[Any, dict]:
    """Stack the numbered slices of ``folder`` (natural order) along z."""
    folder = Path(folder)
    files = slice_files(folder)
    if not files:
        raise ReadError(f"{folder.name} holds no .tif, .tiff or .png slices.")
    if memory_limit is None:
        memory_limit = default_memory_limit()
    first, rgb = _read_slice(files[0])
    shape = (len(files), *first.shape)
    nbytes = len(files) * first.nbytes

    def read_plane(i: int) -> np.ndarray:
        arr = first if i == 0 else _read_slice(files[i])[0]
        if arr.shape != first.shape:
            raise ReadError(
                f"{files[i].name} is {arr.shape[1]}×{arr.shape[0]} pixels but {files[0].name} is "
                f"{first.shape[1]}×{first.shape[0]}: all slices in a folder must be the same size."
            )
        return arr

    data: Any = LazyStack(shape, first.dtype, read_plane, name=folder.name)
    if len(files) > 1:
        data.plane(len(files) - 1)  # fail now, not while scrolling, if the last slice is bad
    storage = "lazy"
    if nbytes <= memory_limit:
        data = np.stack([data.plane(i) for i in range(len(files))])
        storage = "memory"
    sizes: dict[str, float] = {}
    unit = None
    if files[0].suffix.lower() in TIFF_SUFFIXES:
        try:
            _, m = read_tiff(files[0], memory_limit=memory_limit)
        except ReadError:
            m = {}
        if m.get("pixel_size_nm"):
            px = m["pixel_size_nm"]
            sizes = {"Y": px[-2], "X": px[-1]}
            unit = "nm"
    scale, pixel_size, notes = build_scale("ZYX", sizes, unit)
    warnings = []
    if rgb:
        warnings.append(f"The slices in {folder.name} are RGB(A); converted to grayscale (luminance).")
    meta = {
        "path": str(folder),
        "format": "folder",
        "files": [str(f) for f in files],
        "layer_type": "image",
        "axes": "ZYX",
        "shape": shape,
        "dtype": str(first.dtype),
        "storage": storage,
        "scale": scale,
        "pixel_size_nm": pixel_size,
        "unit": unit or "pixel",
        "warnings": warnings,
        "notes": notes,
    }
    return data, meta
