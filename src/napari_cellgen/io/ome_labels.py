"""Labels inside an OME-Zarr image container (NGFF 0.4 on zarr v2, 0.5 on zarr v3). No Qt.

``IMG.ome.zarr/labels/NAME`` is written as the NGFF "labels" spec describes: a multiscale
integer image with the image's axes and one level per image level (nearest-neighbour
subsampled, with the image's scale), ``image-label`` metadata with a colour per label, and
``NAME`` listed in ``labels/.zattrs``. The image's own arrays and metadata are never
touched. The label group is written to a hidden ``.NAME.partial-*`` folder and renamed into
place, so readers see the old labels or the new ones, never half.
"""

from __future__ import annotations

import colorsys
import os
import shutil
from pathlib import Path

import numpy as np

from .tiff import ReadError

MAX_COLOURS = 65535  # more labels than this: no colour list (viewers then pick their own)


def _ome(attrs: dict) -> tuple[dict, str | None]:
    """``(ome_attrs, version)``: NGFF 0.5 keeps its metadata under "ome", 0.4 at the top level."""
    if isinstance(attrs.get("ome"), dict):
        return attrs["ome"], str(attrs["ome"].get("version", "0.5"))
    ms = attrs.get("multiscales")
    return attrs, (str(ms[0].get("version", "0.4")) if isinstance(ms, list) and ms else None)


def labels_container(path: str | os.PathLike) -> Path | None:
    """The OME-Zarr image for ``IMG.zarr/labels/NAME`` (an image with multiscales), else None."""
    p = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    if p.parent.name != "labels":
        return None
    root = p.parent.parent
    from .zarr_io import is_zarr

    if not is_zarr(root):
        return None
    import zarr

    try:
        attrs = dict(zarr.open_group(str(root), mode="r").attrs)
    except Exception:
        return None
    ome, _ = _ome(attrs)
    return root if isinstance(ome.get("multiscales"), list) and ome["multiscales"] else None


def _image_info(root: Path):
    import zarr

    group = zarr.open_group(str(root), mode="r")
    ome, version = _ome(dict(group.attrs))
    ms = ome["multiscales"][0]
    datasets = ms.get("datasets") or []
    try:
        shapes = [tuple(int(s) for s in group[d["path"]].shape) for d in datasets]
        chunks = tuple(int(c) for c in group[datasets[0]["path"]].chunks)
    except (KeyError, IndexError) as exc:
        raise ReadError(f"{root.name}: its multiscales metadata names a missing array ({exc})") from exc
    return group, ome, version, ms, shapes, chunks


def check_labels_target(path: str | os.PathLike, shape: tuple[int, ...] | None = None) -> Path:
    """Refuse, with one line, labels that cannot go to ``IMG.zarr/labels/NAME``; returns the container.

    ``shape``: the labels' shape (the image as napari-cellgen reads it, singleton t/c dropped).
    """
    p = Path(path)
    root = labels_container(p)
    if root is None:
        raise ValueError(f"{p} is not IMG.zarr/labels/NAME inside an OME-Zarr image (multiscales metadata)")
    name = p.name
    if not name or name.startswith(".") or not all(c.isalnum() or c in "-_." for c in name):
        raise ValueError(f"labels name {name!r}: use letters, digits, '-', '_' or '.' (not first)")
    target = root / "labels" / name
    if target.exists():
        import zarr

        try:
            ok = "image-label" in _ome(dict(zarr.open_group(str(target), mode="r").attrs))[0]
        except Exception:
            ok = False
        if not ok:
            raise ValueError(f"{target} exists and is not an OME-Zarr label image: refusing to replace it")
    folder = target.parent if target.parent.is_dir() else root
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"cannot write into {folder}")
    if shape is not None:
        level0 = _image_info(root)[4][0]
        lead = len(level0) - len(shape)
        if lead < 0 or tuple(level0[lead:]) != tuple(shape) or any(s != 1 for s in level0[:lead]):
            raise ValueError(f"the labels' shape {tuple(shape)} does not match the image in {root.name} "
                             f"{tuple(level0)}: segment that image itself")
    return root


def colours(ids) -> list[dict]:
    """NGFF ``colors`` entries: a distinct, reproducible RGBA per label value (golden-ratio hues)."""
    out = []
    for v in ids:
        h = (int(v) * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.85, 1.0)
        out.append({"label-value": int(v), "rgba": [round(r * 255), round(g * 255), round(b * 255), 255]})
    return out


def _label_ids(data, step: int) -> np.ndarray:
    ids = np.zeros(0, np.int64)
    for i in range(0, data.shape[0], step):
        ids = np.union1d(ids, np.unique(np.asarray(data[i : i + step])))
    return ids[ids != 0]


def _nearest(n_out: int, n_in: int) -> np.ndarray:
    return np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64), n_in - 1)


def write_labels(
    path: str | os.PathLike,
    labels,
    *,
    dtype=None,
    properties: list[dict] | None = None,
    colour: bool = True,
) -> Path:
    """Write ``labels`` (numpy, memmap, dask, zarr; the image's shape) as ``IMG.zarr/labels/NAME``.

    ``properties``: optional NGFF ``properties`` entries (dicts with ``label-value``). Returns the
    label group's path. Only ``labels/`` (its attributes and the ``NAME`` group) is written.
    """
    import zarr

    from .._paths import remove_stale, replace_dir, temp_name

    root = check_labels_target(path, tuple(labels.shape))
    group, ome, version, ms, shapes, chunks = _image_info(root)
    fmt = int(getattr(getattr(group, "metadata", None), "zarr_format", 2) or 2)
    lead = len(shapes[0]) - labels.ndim
    dtype = np.dtype(dtype or labels.dtype)
    if dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, got {dtype}")
    labels_group = zarr.open_group(str(root / "labels"), mode="a", zarr_format=fmt)
    target = root / "labels" / Path(path).name
    remove_stale(target.parent)
    tmp = temp_name(target, "partial")
    try:
        g = zarr.open_group(str(tmp), mode="w", zarr_format=fmt)
        step = chunks[lead] if labels.ndim == 3 else labels.shape[0]
        datasets = []
        for lvl, (d, shape) in enumerate(zip(ms["datasets"], shapes, strict=False)):
            lchunks = tuple(min(c, s) for c, s in zip(chunks, shape, strict=False))
            arr = g.create_array(str(lvl), shape=shape, chunks=lchunks, dtype=dtype, fill_value=0)
            idx = [_nearest(shape[lead + a], labels.shape[a]) for a in range(labels.ndim)]
            for z0 in range(0, shape[lead], step):
                rows = idx[0][z0 : z0 + step]
                block = np.asarray(labels[int(rows[0]) : int(rows[-1]) + 1])[rows - rows[0]]
                block = block[np.ix_(np.arange(len(rows)), *idx[1:])] if labels.ndim > 1 else block
                arr[(0,) * lead + (slice(z0, z0 + len(rows)),)] = block.reshape((1,) * lead + block.shape).astype(
                    dtype, copy=False)
            datasets.append({"path": str(lvl), "coordinateTransformations": d.get("coordinateTransformations")
                             or [{"type": "scale", "scale": [1.0] * len(shape)}]})
        label_ms = {k: v for k, v in ms.items() if k in ("axes", "coordinateTransformations", "version")}
        label_ms.update({"name": target.name, "datasets": datasets})
        image_label: dict = {"version": version or "0.4", "source": {"image": "../../"}}
        if colour:
            ids = _label_ids(labels, step)
            if len(ids) <= MAX_COLOURS:
                image_label["colors"] = colours(ids)
        if properties:
            image_label["properties"] = [dict(p) for p in properties]
        meta = {"multiscales": [label_ms], "image-label": image_label}
        g.attrs.update({"ome": {"version": version, **meta}} if "ome" in dict(group.attrs) else meta)
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # list NAME in labels/ (the only change outside labels/NAME)
    lattrs = dict(labels_group.attrs)
    if "ome" in dict(group.attrs):
        lome = dict(lattrs.get("ome") or {"version": version})
        lome["labels"] = [*[n for n in lome.get("labels", []) if n != target.name], target.name]
        labels_group.attrs["ome"] = lome
    else:
        labels_group.attrs["labels"] = [*[n for n in lattrs.get("labels", []) if n != target.name], target.name]
    return target
