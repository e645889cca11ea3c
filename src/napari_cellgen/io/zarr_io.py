"""Zarr and OME-Zarr (NGFF) stacks: lazy, chunked reading and atomic writing. No Qt.

Reading accepts a plain zarr array, a group holding one array, or an OME-Zarr image
(``multiscales`` metadata, NGFF 0.4 on zarr v2 or 0.5 on zarr v3): level 0 is returned
as the data, every level is available to napari as a multiscale pyramid through
:func:`layer_data_multiscale`. Leading singleton axes (``t``, ``c``) are dropped lazily.

Writing (:class:`ZarrWriter`) goes to a hidden ``.NAME.partial-*`` folder next to the
target and is renamed onto it only by :meth:`ZarrWriter.commit`, so an interrupted or
failed job never leaves a zarr that looks complete; the group's attributes also carry
``{"napari_cellgen": {"complete": true}}``, written last.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .tiff import ReadError, nm_per_unit

MARKER = "napari_cellgen"
_ZARR_FILES = (".zgroup", ".zarray", "zarr.json")


def is_zarr(path: str | os.PathLike) -> bool:
    """True for a folder that is a zarr group or array (v2 or v3)."""
    p = Path(path)
    return p.is_dir() and any((p / f).is_file() for f in _ZARR_FILES)


def _multiscales(attrs: dict) -> list | None:
    ms = attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")
    return ms if isinstance(ms, list) and ms else None


def _squeeze(arr, axes: list[str]):
    """Drop leading singleton axes (t, c) lazily; keep the last two or three spatial ones."""
    drop = 0
    while arr.ndim - drop > 3 and arr.shape[drop] == 1:
        drop += 1
    while arr.ndim - drop > 2 and arr.shape[drop] == 1 and axes and axes[drop].lower() in ("t", "c"):
        drop += 1
    if not drop:
        return arr, axes
    import dask.array as da

    return da.from_zarr(arr)[(0,) * drop], axes[drop:] if axes else axes


def open_levels(path: str | os.PathLike) -> tuple[list, dict]:
    """``(levels, info)``: the arrays of every resolution level (full resolution first).

    ``info`` has ``axes`` (letters, e.g. "ZYX"), ``scale`` (of level 0, per axis),
    ``unit`` and ``attrs`` (the group's attributes, or {}).
    """
    import zarr

    p = Path(path)
    try:
        node = zarr.open(str(p), mode="r")
    except Exception as exc:  # zarr raises several types for broken metadata
        raise ReadError(f"{p.name} is not a readable zarr ({type(exc).__name__}: {exc}).") from exc
    attrs: dict = {}
    names: list[str] = []
    axes: list[str] = []
    scale: list[float] = []
    unit = None
    if isinstance(node, zarr.Array):
        arrays = [node]
    else:
        attrs = dict(node.attrs)
        ms = _multiscales(attrs)
        if ms:
            m = ms[0]
            names = [d["path"] for d in m.get("datasets", [])]
            ax = m.get("axes") or []
            axes = [a["name"] if isinstance(a, dict) else str(a) for a in ax]
            units = {a.get("unit") for a in ax if isinstance(a, dict) and a.get("type") == "space"}
            unit = units.pop() if len(units) == 1 else None
            for t in m.get("datasets", [{}])[0].get("coordinateTransformations") or []:
                if t.get("type") == "scale":
                    scale = [float(v) for v in t["scale"]]
        else:
            names = sorted(k for k, _ in node.arrays())
            if len(names) != 1 and "0" in names:
                names = ["0"]
            elif len(names) != 1:
                listed = ", ".join(names) or "none"
                raise ReadError(
                    f"{p.name} is a zarr group without OME multiscales metadata and holds "
                    f"{len(names)} arrays ({listed}); open one of them, e.g. {p / 'NAME'}."
                )
        try:
            arrays = [node[n] for n in names]
        except KeyError as exc:
            raise ReadError(f"{p.name}: the multiscales metadata names a missing array {exc}.") from exc
    if not arrays:
        raise ReadError(f"{p.name} holds no arrays.")
    axes = [a.upper() for a in axes] if len(axes) == arrays[0].ndim else []
    levels = []
    kept_axes = axes
    for a in arrays:
        sq, kept_axes = _squeeze(a, axes)
        levels.append(sq)
    ndim = levels[0].ndim
    if not kept_axes:
        kept_axes = list("ZYX"[-ndim:]) if ndim <= 3 else [f"D{i}" for i in range(ndim)]
    scale = scale[-ndim:] if len(scale) >= ndim else [1.0] * ndim
    return levels, {"axes": "".join(kept_axes), "scale": tuple(scale), "unit": unit, "attrs": attrs}


def read_zarr(path: str | os.PathLike) -> tuple[Any, dict]:
    """Open a zarr / OME-Zarr stack lazily: ``(level0, meta)`` in :func:`read_stack`'s format."""
    p = Path(path)
    levels, info = open_levels(p)
    data = levels[0]
    axes = info["axes"]
    factor = nm_per_unit(info["unit"]) if info["unit"] else None
    spatial = [i for i, a in enumerate(axes) if a in "ZYX"]
    pixel_size = tuple(info["scale"][i] * factor for i in spatial) if factor is not None and spatial else None
    scale = tuple(s * factor for s in info["scale"]) if factor is not None else info["scale"]
    attrs = info["attrs"]
    mark = attrs.get(MARKER) or {}
    warnings = []
    if mark and not mark.get("complete", False):
        warnings.append(f"{p.name} was not finished by the job that wrote it: it may be incomplete.")
    is_labels = bool(
        attrs.get("image-label")
        or mark.get("labels")
        or (
            np.dtype(data.dtype).kind in "iu"
            and np.dtype(data.dtype).itemsize >= 4
            and "labels" in p.name.lower()
        )
    )
    meta = {
        "path": str(p),
        "format": "zarr",
        "layer_type": "labels" if is_labels else "image",
        "axes": axes,
        "shape": tuple(int(s) for s in data.shape),
        "dtype": str(np.dtype(data.dtype)),
        "storage": "lazy",
        "chunks": tuple(int(c) for c in getattr(data, "chunks", ()) if isinstance(c, (int, np.integer)))
        or None,
        "levels": [tuple(int(s) for s in lv.shape) for lv in levels],
        "scale": scale,
        "pixel_size_nm": pixel_size,
        "unit": "nm" if factor is not None else "pixel",
        "warnings": warnings,
        "notes": [],
    }
    return data, meta


def layer_data_multiscale(path: str | os.PathLike) -> tuple[Any, dict, str]:
    """A napari LayerData tuple for a zarr: every level as a lazy multiscale pyramid."""
    levels, _ = open_levels(path)
    data, meta = read_zarr(path)
    kwargs: dict[str, Any] = {
        "name": Path(path).name.removesuffix(".zarr").removesuffix(".ome"),
        "scale": tuple(meta["scale"]),
        "metadata": {k: v for k, v in meta.items() if k not in ("warnings", "notes")},
    }
    if meta["unit"] == "nm":
        kwargs["units"] = ("nm",) * len(meta["axes"])
    if len(levels) > 1:
        kwargs["multiscale"] = True
        return levels, kwargs, meta["layer_type"]
    return data, kwargs, meta["layer_type"]


# --------------------------------------------------------------------------- writing
def _ngff(ndim: int, pixel_size, levels: int = 1, name: str = "") -> dict:
    axes_names = "zyx"[-ndim:] if ndim <= 3 else [f"d{i}" for i in range(ndim)]
    unit = "nanometer" if pixel_size is not None else None
    ps = [float(v) for v in pixel_size][-ndim:] if pixel_size is not None else [1.0] * ndim
    axes = [{"name": a, "type": "space", **({"unit": unit} if unit else {})} for a in axes_names]
    datasets = [
        {
            "path": str(i),
            "coordinateTransformations": [
                {"type": "scale", "scale": [*ps[:-2], *(v * 2**i for v in ps[-2:])]}
            ],
        }
        for i in range(levels)
    ]
    return {"multiscales": [{"version": "0.4", "name": name, "axes": axes, "datasets": datasets}]}


def default_chunks(shape: tuple[int, ...], z: int = 8, yx: int = 512) -> tuple[int, ...]:
    if len(shape) == 2:
        return (min(shape[0], yx), min(shape[1], yx))
    return (min(shape[0], z), min(shape[1], yx), min(shape[2], yx))


def check_zarr_target(path: str | os.PathLike) -> Path:
    """Raise a clear error unless a zarr can be written at ``path`` (replacing only a zarr)."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.exists() and not is_zarr(p):
        kind = "folder" if p.is_dir() else "file"
        raise FileExistsError(f"{p} exists and is a {kind}, not a zarr: refusing to replace it")
    if not parent.is_dir():
        raise FileNotFoundError(f"the output folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"cannot write into {parent} (read-only)")
    return p


class ZarrWriter:
    """An OME-Zarr (NGFF 0.4, zarr v2) image or label volume written atomically.

    ``array`` is the level-0 zarr array to fill (possibly from other processes: they
    open ``tmp_path``/``0``). :meth:`commit` marks the group complete and renames it
    onto ``path``; :meth:`abort` (also on leaving a ``with`` block with an error)
    deletes the partial folder.
    """

    def __init__(
        self, path, shape, dtype, *, chunks=None, pixel_size=None, labels=False, compressor="default"
    ):
        import zarr

        from .._paths import remove_stale, temp_name

        self.path = check_zarr_target(path).absolute()  # other processes may write into it
        remove_stale(self.path.parent)  # partial folders of killed jobs
        # .NAME.partial-PID-HOST-xxxxxxxx: recognisable as stale once that process is gone
        self.tmp_path = temp_name(self.path, "partial")
        self.shape = tuple(int(s) for s in shape)
        self.chunks = tuple(chunks or default_chunks(self.shape))
        self.committed = False
        try:
            group = zarr.open_group(str(self.tmp_path), mode="w", zarr_format=2)
            kw = {} if compressor == "default" else {"compressors": compressor}
            self.array = group.create_array(
                "0", shape=self.shape, chunks=self.chunks, dtype=dtype, fill_value=0, **kw
            )
            attrs = _ngff(len(self.shape), pixel_size, name=self.path.name)
            attrs[MARKER] = {"complete": False, "labels": bool(labels)}
            if labels:
                attrs["image-label"] = {"version": "0.4"}
            group.attrs.update(attrs)
        except BaseException as exc:
            shutil.rmtree(self.tmp_path, ignore_errors=True)  # nothing half-made stays behind
            if isinstance(exc, PermissionError):
                raise PermissionError(f"cannot write into {self.path.parent} ({exc.strerror or exc})") from exc
            raise
        self.group = group

    @property
    def array_path(self) -> str:
        return str(self.tmp_path / "0")

    def commit(self, extra_attrs: dict | None = None) -> Path:
        attrs = dict(self.group.attrs)
        attrs.update(extra_attrs or {})
        attrs[MARKER] = {**attrs.get(MARKER, {}), "complete": True}
        self.group.attrs.update(attrs)
        from .._paths import replace_dir

        replace_dir(self.tmp_path, self.path)  # an older zarr is moved aside first, deleted after
        self.committed = True
        return self.path

    def abort(self) -> None:
        if not self.committed:
            shutil.rmtree(self.tmp_path, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None or not self.committed:
            self.abort()
        return False


def write_zarr(path, data, *, chunks=None, pixel_size=None, labels=False) -> Path:
    """Write ``data`` (numpy, memmap, dask, zarr; 2D or ZYX) to an OME-Zarr, slice by slice."""
    shape = tuple(data.shape)
    with ZarrWriter(
        path, shape, np.dtype(data.dtype), chunks=chunks, pixel_size=pixel_size, labels=labels
    ) as w:
        if len(shape) == 2:
            w.array[...] = np.asarray(data)
        else:
            step = w.chunks[0]
            for z in range(0, shape[0], step):
                w.array[z : z + step] = np.asarray(data[z : z + step])
        return w.commit()
