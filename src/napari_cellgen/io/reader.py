"""npe2 reader: TIFF stacks and folders of numbered slices → napari layers with physical scale."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .display import percentile_limits
from .stack import detect, read_stack


def _single_path(path) -> str | None:
    if isinstance(path, (list, tuple)):
        return str(path[0]) if len(path) == 1 else None
    return os.fspath(path)


def get_reader(path):
    """Return :func:`read_layers` if ``path`` is a TIFF or a folder of slices, else None."""
    p = _single_path(path)
    if p is None or detect(p) is None:
        return None
    return read_layers


def layer_name(path: str | os.PathLike) -> str:
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def layer_data(data, meta: dict) -> tuple[Any, dict, str]:
    """A napari LayerData tuple for what :func:`~napari_cellgen.io.read_stack` returned."""
    kwargs: dict[str, Any] = {
        "name": layer_name(meta["path"]),
        "scale": tuple(meta["scale"]),
        "metadata": {k: v for k, v in meta.items() if k not in ("warnings", "notes")},
    }
    axes = meta.get("axes", "")
    if meta.get("unit") == "nm" and axes and set(axes) <= set("ZYX"):
        kwargs["units"] = ("nm",) * len(axes)
    layer_type = meta.get("layer_type", "image")
    if layer_type == "image" and meta.get("storage") != "memory" and str(meta.get("dtype")) != "uint8":
        # napari would otherwise take the dtype's full range for data it cannot scan cheaply
        kwargs["contrast_limits"] = percentile_limits(data, 0.0, 100.0)
    return data, kwargs, layer_type


def read_layers(path) -> list[tuple]:
    """Read one TIFF or folder; warnings (e.g. RGB → grayscale) become napari notifications."""
    p = _single_path(path)
    data, meta = read_stack(p)
    if meta.get("warnings") or meta.get("notes"):
        from napari.utils.notifications import show_info, show_warning

        for msg in meta.get("warnings", []):
            show_warning(msg)
        for msg in meta.get("notes", []):
            show_info(msg)
    return [layer_data(data, meta)]
