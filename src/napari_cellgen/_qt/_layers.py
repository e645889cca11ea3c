"""Helpers shared by the dock widgets: layer data access and safe output layers."""

from __future__ import annotations

import weakref

import numpy as np


def layer_array(layer):
    """The full-resolution data of an Image/Labels layer (level 0 of a multiscale)."""
    data = layer.data
    if getattr(layer, "multiscale", False):
        data = data[0]
    return data


def pixel_size_of(layer):
    """Pixel size in nm: stored by the reader (or by us), else from a length unit on every axis, else None."""
    from ..io.stack import stored_pixel_size
    from ..io.tiff import nm_per_unit

    ps = stored_pixel_size(getattr(layer, "metadata", None))
    if ps:
        return ps
    factors = [nm_per_unit(str(u)) for u in getattr(layer, "units", ())]
    if factors and all(f is not None for f in factors):
        return tuple(float(s) * f for s, f in zip(layer.scale, factors, strict=True))
    return None


def geometry_of(layer, ndim: int | None = None) -> dict:
    """``scale``, ``translate`` and ``units`` of ``layer`` for a new layer of ``ndim`` dimensions.

    Output layers carry their source's pixel size and units, so they overlay it exactly and
    napari sees one set of units (no "Inconsistent units across layers", the scale bar keeps nm).
    A layer with more dimensions than the source gets the source's y spacing on the extra axes.
    """
    ndim = layer.ndim if ndim is None else ndim
    scale, translate = list(layer.scale), list(layer.translate)
    units = [str(u) for u in layer.units]
    extra = ndim - layer.ndim
    if extra > 0:
        scale = [scale[-2]] * extra + scale
        translate = [0.0] * extra + translate
        units = [units[-2]] * extra + units
    return {"scale": tuple(scale[-ndim:]), "translate": tuple(translate[-ndim:]), "units": tuple(units[-ndim:])}


def bring_into_view(viewer, layer) -> None:
    """Show ``layer``: move the sliders onto its first slice, and the camera onto it, when they are off it."""
    ext = np.asarray(layer.extent.world)  # (2, layer.ndim) inclusive world bounds
    off = viewer.dims.ndim - layer.ndim  # the layer's axes are the viewer's last ones
    displayed = list(viewer.dims.displayed)
    for i in range(layer.ndim):
        axis = off + i
        if axis not in displayed and not ext[0, i] - 1e-6 <= viewer.dims.point[axis] <= ext[1, i] + 1e-6:
            viewer.dims.set_point(axis, float(ext[0, i]))
    center = list(viewer.camera.center)[-len(displayed):]
    if any(axis >= off and not ext[0, axis - off] <= c <= ext[1, axis - off]
           for axis, c in zip(displayed, center, strict=True)):
        viewer.reset_view()


def edited_slices(paint_atoms) -> set[int]:
    """Slice (axis 0) indices touched by the atoms of a napari Labels ``paint`` event.

    Understands both atom kinds napari emits: a masked edit with a ``slice_key`` of
    slices, and the ``(indices, old_values, new_values)`` fancy-index tuple.
    """
    zs: set[int] = set()
    for atom in paint_atoms or ():
        key = getattr(atom, "slice_key", None)
        if key is not None:
            s = key[0]
            if isinstance(s, slice):
                zs.update(range(s.start or 0, s.stop if s.stop is not None else (s.start or 0) + 1))
            else:
                zs.add(int(s))
        else:
            idx = atom[0]
            first = idx[0] if isinstance(idx, tuple) else idx
            zs.update(int(z) for z in np.unique(np.asarray(first)))
    return zs


_MARKED: weakref.WeakSet = weakref.WeakSet()  # layers whose paint events _mark_edited follows


def _mark_edited(layer):
    """Flag painted output layers (and remember the painted slices, for fine-tuning); once per layer."""
    if layer in _MARKED:
        return
    _MARKED.add(layer)

    def on_paint(event=None):
        layer.metadata["cellgen_edited"] = True
        if layer.ndim == 3 and event is not None:
            done = set(layer.metadata.get("cellgen_edited_slices", []))
            layer.metadata["cellgen_edited_slices"] = sorted(done | edited_slices(event.value))

    layer.events.paint.connect(on_paint)


def track_edits(viewer) -> None:
    """Remember the painted slices of every Labels layer of ``viewer``, now and when added (for fine-tuning)."""
    from napari.layers import Labels

    def watch(layer):
        if isinstance(layer, Labels):
            _mark_edited(layer)

    viewer.layers.events.inserted.connect(lambda e: watch(e.value))
    for layer in viewer.layers:
        watch(layer)


def put_labels(viewer, name: str, labels: np.ndarray, *, like=None, scale=None, features=None, metadata=None):
    """Add the result as a Labels layer, or refresh our previous output.

    ``like``: the source layer, whose scale, translate and units the result takes (see
    :func:`geometry_of`); the result is then brought into view.
    A previous output layer is replaced in place only if the user has not painted
    into it; otherwise a new layer is added so corrections are never lost.
    Returns ``(layer, replaced)``.
    """
    geo = geometry_of(like, labels.ndim) if like is not None else ({"scale": scale} if scale is not None else {})
    metadata = {**(metadata or {}), "cellgen_output": True, "cellgen_edited": False}
    if name in viewer.layers:
        old = viewer.layers[name]
        if old.metadata.get("cellgen_output") and not old.metadata.get("cellgen_edited"):
            old.data = labels
            for key, value in geo.items():
                setattr(old, key, value)
            old.features = features if features is not None else {}
            old.metadata.update(metadata)
            bring_into_view(viewer, old)
            return old, True
        i = 2
        while f"{name} [{i}]" in viewer.layers:
            i += 1
        name = f"{name} [{i}]"
    layer = viewer.add_labels(labels, name=name, features=features, metadata=metadata, **geo)
    _mark_edited(layer)
    bring_into_view(viewer, layer)
    return layer, False


def widen(*widgets, chars: int = 22) -> None:
    """Combo boxes that show whole layer/model names: as wide as their longest item (at least ``chars``)."""
    from qtpy.QtWidgets import QComboBox

    for w in widgets:
        box = w.native if isinstance(w.native, QComboBox) else w.native.findChild(QComboBox)
        if box is None:
            continue
        box.setMinimumContentsLength(chars)
        box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        box.currentTextChanged.connect(box.setToolTip)


# napari's status bar lists a label's features in column order and cuts the line at the window's
# width: what a user hovers for comes first (size, diameter, shape, extent), then the rest
HOVER_FIRST = ("label", "volume_nm3", "area_nm2", "volume_px", "area_px", "equivalent_diameter_nm",
               "equivalent_diameter_px", "solidity", "eccentricity", "z_start", "z_end")


def features_from(table: dict) -> dict:
    """A measurement table as ``Labels.features``: the ``index`` column, the hover columns first."""
    first = [c for c in HOVER_FIRST if c in table]
    return {"index": table["label"], **{c: table[c] for c in first},
            **{c: v for c, v in table.items() if c not in first}}
