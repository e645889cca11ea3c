"""Layers › Segment › "Segment mitochondria": one click on the selected image layer."""

from __future__ import annotations

import napari


def segment_selected(viewer: napari.viewer.Viewer):
    """Segment the active image layer with the default model and options (in a thread); returns the Job."""
    import napari
    from napari.utils import progress
    from napari.utils.notifications import show_error

    from ..segment.pipeline import SegmentOptions
    from .segment_widget import run_segmentation

    layer = viewer.layers.selection.active
    if not isinstance(layer, napari.layers.Image):
        show_error("Select an image layer first, then choose Layers › Segment › Segment mitochondria.")
        return None
    pbar = progress(total=0, desc=f"Segmenting {layer.name}")

    def on_progress(p):
        if pbar.total != p.total:
            pbar.total = p.total
        pbar.set_description(f"{p.stage}: {layer.name}")
        pbar.n = p.done
        pbar.refresh()

    try:
        return run_segmentation(viewer, layer, SegmentOptions(), on_progress=on_progress,
                                on_end=lambda state: pbar.close())
    except ValueError as exc:
        pbar.close()
        show_error(str(exc))
        return None
