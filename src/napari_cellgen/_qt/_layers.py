"""Helpers shared by the dock widgets: layer data access and safe output layers."""

from __future__ import annotations

import numpy as np


def layer_array(layer):
    """The full-resolution data of an Image/Labels layer (level 0 of a multiscale)."""
    data = layer.data
    if getattr(layer, "multiscale", False):
        data = data[0]
    return data


def pixel_size_of(layer):
    """Pixel size in nm stored by the reader, else None."""
    meta = getattr(layer, "metadata", {}) or {}
    ps = meta.get("pixel_size_nm") or meta.get("pixel_size")
    return tuple(float(v) for v in ps) if ps else None


def _mark_edited(layer):
    """Flag painted output layers (and remember the painted slices, for fine-tuning)."""
    from ..train.loop import edited_slices

    def on_paint(event=None):
        layer.metadata["cellgen_edited"] = True
        if layer.ndim == 3 and event is not None:
            done = set(layer.metadata.get("cellgen_edited_slices", []))
            layer.metadata["cellgen_edited_slices"] = sorted(done | edited_slices(event.value))

    layer.events.paint.connect(on_paint)


def put_labels(viewer, name: str, labels: np.ndarray, *, scale=None, features=None, metadata=None):
    """Add the result as a Labels layer, or refresh our previous output.

    A previous output layer is replaced in place only if the user has not painted
    into it; otherwise a new layer is added so corrections are never lost.
    Returns ``(layer, replaced)``.
    """
    metadata = {**(metadata or {}), "cellgen_output": True, "cellgen_edited": False}
    if name in viewer.layers:
        old = viewer.layers[name]
        if old.metadata.get("cellgen_output") and not old.metadata.get("cellgen_edited"):
            old.data = labels
            old.features = features if features is not None else {}
            old.metadata.update(metadata)
            return old, True
        i = 2
        while f"{name} [{i}]" in viewer.layers:
            i += 1
        name = f"{name} [{i}]"
    kw = {"scale": scale} if scale is not None else {}
    layer = viewer.add_labels(labels, name=name, features=features, metadata=metadata, **kw)
    _mark_edited(layer)
    return layer, False
