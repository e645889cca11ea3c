"""Read and write EM stacks as TIFF (multi-page, BigTIFF, OME-TIFF, ImageJ). No Qt, no napari.

``read_tiff(path)`` returns ``(array_like, meta)``:

* small stacks are read into memory; stacks larger than ``memory_limit`` bytes open at
  once and lazily: memory-mapped when the file is uncompressed and contiguous, otherwise
  as a :class:`~napari_cellgen.io._lazy.LazyStack` that decodes one page per plane;
* ``meta["scale"]`` has one entry per axis of the array: the pixel size in nm when the
  file's OME ``PhysicalSize*`` or ImageJ resolution/spacing/unit says so, else 1;
* RGB(A) is converted to grayscale and ``meta["warnings"]`` says so (callers decide how
  to show it).

``write_tiff(path, data, pixel_size_nm)`` (:mod:`.tiff_write`) writes an ImageJ-compatible TIFF
atomically, so that Fiji and :func:`read_tiff` both get the pixel size back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from math import prod
from pathlib import Path
from typing import Any

import numpy as np

from ._lazy import LazyStack, to_gray

TIFF_SUFFIXES = (".tif", ".tiff")
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
LAYER_KEY = "napari_cellgen_layer"  # marks label images written by write_tiff(labels=True)

# length units → nanometres (OME and ImageJ spellings; "u" stands for µ after _norm_unit)
_NM_PER_UNIT = {
    "pm": 1e-3,
    "a": 0.1,
    "å": 0.1,
    "angstrom": 0.1,
    "nm": 1.0,
    "nanometer": 1.0,
    "nanometre": 1.0,
    "um": 1e3,
    "micron": 1e3,
    "microns": 1e3,
    "micrometer": 1e3,
    "micrometre": 1e3,
    "mm": 1e6,
    "millimeter": 1e6,
    "cm": 1e7,
    "centimeter": 1e7,
    "m": 1e9,
    "meter": 1e9,
}


class ReadError(ValueError):
    """A file looks like an image but cannot be read (corrupt, truncated, unsupported layout)."""


def is_tiff(path: str | os.PathLike) -> bool:
    """True when ``path`` is a file that starts with a TIFF or BigTIFF header."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) in _TIFF_MAGIC
    except OSError:
        return False


def _norm_unit(unit: Any) -> str:
    u = str(unit or "").strip().lower()
    for micro in ("\\u00b5", "µ", "μ"):  # ImageJ writes the escape literally
        u = u.replace(micro, "u")
    return u


def nm_per_unit(unit: Any) -> float | None:
    """Nanometres per ``unit`` ("nm", "µm", "micron", ...), or None if it is not a length."""
    return _NM_PER_UNIT.get(_norm_unit(unit))


def _positive(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) and v > 0 else None


# --------------------------------------------------------------------------- metadata
def _ome_sizes(tif) -> tuple[dict[str, float], str | None]:
    try:
        root = ET.fromstring(tif.ome_metadata)
    except ET.ParseError:
        return {}, None
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return {}, None
    sizes = {}
    for ax in "XYZ":
        value = _positive(pixels.get(f"PhysicalSize{ax}"))
        factor = nm_per_unit(pixels.get(f"PhysicalSize{ax}Unit", "µm"))  # OME default: µm
        if value is not None and factor is not None:
            sizes[ax] = value * factor
    return sizes, ("nm" if sizes else None)


def _resolution_sizes(page) -> tuple[float | None, float | None]:
    try:
        rx, ry = page.resolution
    except (AttributeError, TypeError, ValueError):
        return None, None
    rx, ry = _positive(rx), _positive(ry)
    return (1.0 / rx if rx else None), (1.0 / ry if ry else None)


def _imagej_sizes(tif) -> tuple[dict[str, float], str | None]:
    md = tif.imagej_metadata or {}
    px, py = _resolution_sizes(tif.pages[0])
    sizes = {"X": px, "Y": py, "Z": _positive(md.get("spacing"))}
    sizes = {k: v for k, v in sizes.items() if v is not None}
    factor = nm_per_unit(md.get("unit"))
    if factor is not None:
        return {k: v * factor for k, v in sizes.items()}, "nm"
    # no length unit: keep a non-trivial calibration as a plain scale
    if all(v == 1.0 for v in sizes.values()):
        return {}, None
    return sizes, "pixel"


def _plain_sizes(tif) -> tuple[dict[str, float], str | None]:
    page = tif.pages[0]
    factor = {3: 1e7, 4: 1e6, 5: 1e3}.get(int(getattr(page, "resolutionunit", 1) or 1))
    if factor is None:  # no unit or inch: scanner/screen dpi, meaningless for EM
        return {}, None
    px, py = _resolution_sizes(page)
    sizes = {k: v * factor for k, v in (("X", px), ("Y", py)) if v is not None}
    return sizes, ("nm" if sizes else None)


def _pixel_sizes(tif) -> tuple[dict[str, float], str | None, str]:
    """Pixel size per axis letter, its unit ("nm", "pixel" or None) and the flavour of TIFF."""
    if tif.is_ome and tif.ome_metadata:
        sizes, unit = _ome_sizes(tif)
        if sizes:
            return sizes, unit, "ome-tiff"
    if tif.is_imagej:
        sizes, unit = _imagej_sizes(tif)
        return sizes, unit, "imagej-tiff"
    shaped = (tif.shaped_metadata or ({},))[0] if tif.is_shaped else {}
    if isinstance(shaped, dict) and shaped.get("pixel_size_nm"):
        px = [_positive(v) for v in shaped["pixel_size_nm"]]
        axes = "ZYX"[-len(px) :]
        sizes = {ax: v for ax, v in zip(axes, px, strict=True) if v is not None}
        return sizes, "nm", "tiff"
    sizes, unit = _plain_sizes(tif)
    return sizes, unit, ("ome-tiff" if tif.is_ome else "tiff")


def _layer_type(tif) -> str:
    md = tif.imagej_metadata or {}
    props = md.get("Properties") or {}
    if isinstance(props, dict) and props.get(LAYER_KEY) == "labels":
        return "labels"
    if tif.is_shaped:
        shaped = (tif.shaped_metadata or ({},))[0]
        if isinstance(shaped, dict) and shaped.get(LAYER_KEY) == "labels":
            return "labels"
    return "image"


def build_scale(axes: str, sizes: dict[str, float], unit: str | None) -> tuple[tuple, tuple | None, list]:
    """``(scale, pixel_size_nm, notes)`` for an array with ``axes`` (e.g. "ZYX").

    ``sizes`` maps axis letters to pixel sizes; a missing z spacing is taken equal to x
    (and said in ``notes``)."""
    notes = []
    sizes = dict(sizes)
    if "Z" in axes and "Z" not in sizes and "X" in sizes and unit == "nm":
        sizes["Z"] = sizes["X"]
        notes.append("The file gives no z spacing; assuming it equals the x pixel size.")
    scale = tuple(float(sizes.get(ax, 1.0)) for ax in axes)
    spatial = [ax for ax in axes if ax in "ZYX"]
    pixel_size = tuple(float(sizes[ax]) for ax in spatial) if unit == "nm" and "X" in sizes else None
    return scale, pixel_size, notes


# --------------------------------------------------------------------------- reading
class _LogCapture(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _tifffile_log() -> Iterator[_LogCapture]:
    """Collect tifffile's warnings: it logs (not raises) broken page chains of truncated files."""
    logger = logging.getLogger("tifffile")
    handler = _LogCapture()
    logger.addHandler(handler)
    old, logger.propagate = logger.propagate, False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = old


_BROKEN = re.compile(r"invalid (page )?offset|failed to reshape|truncat|corrupt|invalid tag", re.I)


def _corrupt(path: Path, detail: str) -> ReadError:
    return ReadError(
        f"{path.name} looks corrupt or truncated ({detail}). "
        "Copy or export the file again; if it came from a microscope, re-save it as TIFF in Fiji."
    )


def _failed(path: Path, exc: Exception, where: str = "") -> ReadError:
    """A ReadError for an exception raised while decoding ``path``."""
    msg = str(exc)
    codec = re.search(r"COMPRESSION\.(\w+).*requires the 'imagecodecs' package", msg)
    if codec:
        return ReadError(
            f"{path.name} is {codec.group(1)}-compressed, which needs the imagecodecs package: "
            "pip install imagecodecs (or re-save the file uncompressed in Fiji)."
        )
    return _corrupt(path, f"{where}{type(exc).__name__}: {msg}")


def _normalise_axes(axes: str) -> str:
    lead = axes[:-2]
    if len(lead) == 1 and lead in "IQZTS":  # one unnamed page axis: a z stack
        return "ZYX"
    return axes.replace("S", "C")


def read_tiff(path: str | os.PathLike, memory_limit: int | None = None) -> tuple[Any, dict]:
    """Read a TIFF stack; see the module docstring. Raises :class:`ReadError`."""
    import tifffile

    path = Path(path)
    if memory_limit is None:
        from .stack import default_memory_limit

        memory_limit = default_memory_limit()
    if not is_tiff(path):
        raise ReadError(f"{path.name} is not a TIFF file (no TIFF header).")
    with _tifffile_log() as log:
        try:
            tif = tifffile.TiffFile(path)
            series = tif.series
            broken = [m for m in log.messages if _BROKEN.search(m)]
        except Exception as exc:  # tifffile raises many types on garbage
            raise _failed(path, exc) from exc
    keep_open = False
    try:
        if broken:
            raise _corrupt(path, re.sub(r"<tifffile[^>]*>\s*", "", broken[0]))
        if not series or not series[0].shape or 0 in series[0].shape:
            raise _corrupt(path, "no image data found")
        if len(series) > 1 and all(
            len(x.shape) == 2 and x.shape == series[0].shape and x.dtype == series[0].dtype for x in series
        ):
            series = [_UniformPages(tif, series)]  # a stack written page by page, without metadata
        s = series[0]
        shape, axes, dtype = tuple(s.shape), s.axes, np.dtype(s.dtype)
        sample = axes.find("S")
        photometric = int(getattr(s.keyframe, "photometric", 1) or 1)
        rgb = sample >= 0 and photometric in (2, 6) and shape[sample] in (3, 4)  # RGB, YCbCr
        # tifffile (before 2026) stores a (3 or 4, Y, X) array as planar RGB unless told otherwise:
        # in a file it wrote, that is a stack of grey slices, not a colour image
        planar = rgb and sample == 0 and len(shape) == 3 and tif.is_shaped and _planar(s.keyframe)
        if planar:
            rgb, axes = False, "Z" + axes[1:]
            sample = -1
        extra = sample >= 0 and not rgb  # non-colour samples: a leading axis like channels
        out_axes = axes.replace("S", "") if rgb else ("S" + axes.replace("S", "") if extra else axes)
        if len(out_axes) < 2 or not out_axes.endswith("YX"):
            raise ReadError(f"{path.name}: unsupported axes {axes!r}; expected YX or ZYX images.")
        if rgb:
            out_shape = shape[:sample] + shape[sample + 1 :]
        elif extra:
            out_shape = (shape[sample], *shape[:sample], *shape[sample + 1 :])
        else:
            out_shape = shape
        out_dtype = to_gray(np.zeros((1, 3), dtype)).dtype if rgb else dtype
        sizes, unit, fmt = _pixel_sizes(tif)
        meta: dict[str, Any] = {
            "path": str(path),
            "format": fmt,
            "bigtiff": bool(tif.is_bigtiff),
            "layer_type": _layer_type(tif),
            "warnings": [],
            "notes": [],
        }
        if len(series) > 1:
            meta["warnings"].append(f"{path.name} holds {len(series)} image series; opened the first.")
        if rgb:
            meta["warnings"].append(
                f"{path.name} is {'RGBA' if shape[sample] == 4 else 'RGB'}; "
                "converted to grayscale (luminance) for EM analysis."
            )
        if planar:
            meta["warnings"].append(
                f"{path.name} is stored as planar RGB ({shape[0]} colour planes, tifffile's old default for a "
                f"({shape[0]}, Y, X) array); read as {shape[0]} grey slices. If it is a colour image, "
                "re-save it in Fiji as RGB."
            )
        nbytes = prod(out_shape) * out_dtype.itemsize
        data: Any
        if nbytes <= memory_limit or (extra and s.dataoffset is None):
            if nbytes > memory_limit:
                meta["notes"].append(f"{path.name} stores planes as samples; it was read into memory.")
            try:
                data = s.asarray()
            except MemoryError:
                raise
            except Exception as exc:
                raise _failed(path, exc) from exc
            if rgb:
                data = to_gray(data, channel_axis=sample)
            storage = "memory"
        elif s.dataoffset is not None and not rgb:
            if s.dataoffset + prod(shape) * dtype.itemsize > path.stat().st_size:
                raise _corrupt(path, "the image data run past the end of the file")
            data = tifffile.memmap(path, series=0, mode="r")
            storage = "memmap"
        else:
            data = _page_stack(path, s, out_shape, out_dtype, rgb)
            keep_open = True
            storage = "lazy"
        if extra:
            data = np.moveaxis(data, sample, 0)
        out_axes = _normalise_axes(out_axes)
        scale, pixel_size, notes = build_scale(out_axes, sizes, unit)
        meta.update(
            axes=out_axes,
            shape=tuple(data.shape),
            dtype=str(np.dtype(data.dtype)),
            storage=storage,
            scale=scale,
            pixel_size_nm=pixel_size,
            unit=unit if unit == "nm" else "pixel",
        )
        meta["notes"] += notes
        return data, meta
    finally:
        if not keep_open:
            tif.close()


def _planar(keyframe) -> bool:
    """Whether the samples of ``keyframe`` are stored as separate planes."""
    return int(getattr(keyframe, "planarconfig", 1) or 1) == 2


class _UniformPages:
    """Single-page series of one shape and dtype (e.g. written one ``write()`` per slice, with
    no ImageJ/OME metadata) seen as one ZYX series."""

    def __init__(self, tif, series):
        self.pages = [x.pages[0] for x in series]
        self.shape = (len(series), *series[0].shape)
        self.axes = "Z" + series[0].axes
        self.dtype = series[0].dtype
        self.keyframe = series[0].keyframe
        self.parent = tif
        self.dataoffset = None

    def asarray(self):
        return np.stack([p.asarray() for p in self.pages])


def _page_stack(path: Path, s, shape, dtype, rgb: bool) -> LazyStack:
    pages = list(s.pages)
    n = prod(shape[:-2])
    if len(pages) != n or any(p is None for p in pages):
        raise ReadError(
            f"{path.name}: the stack is too large to read at once and its {len(pages)} pages do not "
            f"map one-to-one onto {n} planes; re-save it as an uncompressed TIFF to open it lazily."
        )
    parent = s.parent

    def read_plane(i: int) -> np.ndarray:
        page = pages[i]
        try:
            arr = page.asarray()
        except Exception as exc:
            raise _failed(path, exc, f"page {i}: ") from exc
        if rgb:
            arr = to_gray(arr, channel_axis=page.keyframe.axes.index("S"))
        return arr.reshape(shape[-2:])

    stack = LazyStack(shape, dtype, read_plane, name=path.name)
    stack._tif = parent  # keep the file open as long as the stack lives
    # check the ends now, so a truncated file fails at open, not while scrolling
    stack.plane(0)
    if n > 1:
        stack.plane(n - 1)
    return stack


from .tiff_write import write_tiff  # noqa: E402, F401  (re-exported: its home before tiff_write.py)
