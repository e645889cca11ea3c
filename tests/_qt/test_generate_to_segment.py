"""Draw masks → generate → the new layers overlay the source (same pixel size, units, in view) →
one click segments the generated stack back into its masks (issue 14, items 3 and 4)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from _generate_helpers import tiny_generator

NM = 5.0


def in_view(viewer, layer) -> bool:
    """The sliders are on one of the layer's slices and the camera centre is over it."""
    ext = np.asarray(layer.extent.world)
    off = viewer.dims.ndim - layer.ndim
    center = list(viewer.camera.center)[-len(viewer.dims.displayed):]
    for axis in range(off, viewer.dims.ndim):
        i = axis - off
        if axis in viewer.dims.displayed:
            value = center[list(viewer.dims.displayed).index(axis)]
        else:
            value = viewer.dims.point[axis]
        if not ext[0, i] - 1e-6 <= value <= ext[1, i] + 1e-6:
            return False
    return layer.visible


def unit_warnings(notes) -> list[str]:
    return [str(n.message) for n in notes if "units" in str(n.message).lower()]


def draw(viewer, qtbot):
    """Let the canvas draw (napari checks the layers' units on the next draw)."""
    viewer.window._qt_viewer.canvas.native.update()
    qtbot.wait(200)


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLGEN_USER_DIR", str(tmp_path / "user" / "models"))
    return tmp_path


def test_generated_layers_overlay_the_drawn_masks(make_napari_viewer, qtbot, user_dir, notes):
    from napari_cellgen._qt.generate_widget import GenerateWidget
    from napari_cellgen.generate.store import user_generators_dir

    tiny_generator(user_generators_dir() / "tiny")
    viewer = make_napari_viewer(show=True)
    em = viewer.add_image(np.random.default_rng(0).integers(0, 255, (6, 64, 64), np.uint8), name="em",
                          scale=(NM,) * 3, units=("nm",) * 3)
    drawn = viewer.add_labels(np.zeros((6, 64, 64), np.uint32), name="drawn", scale=em.scale, units=em.units)
    viewer.dims.set_point(0, 3 * NM)  # the user is on slice 3 ...
    yy, xx = np.nonzero(np.ones((14, 20), bool))
    drawn.data_setitem((np.full(yy.shape, 3), yy + 20, xx + 30), 1)  # ... and draws a mitochondrion there
    w = GenerateWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.reset_choices()
    assert w.labels.value is drawn  # "masks from" starts on the Labels layer, not on "-----"
    w.generator.value = "tiny"
    w.n.value, w.steps.value = 2, 2
    w.start()
    qtbot.waitUntil(lambda: "generated (tiny) masks" in viewer.layers, timeout=30000)
    draw(viewer, qtbot)
    for name in ("generated (tiny)", "generated (tiny) masks"):
        layer = viewer.layers[name]
        np.testing.assert_allclose(layer.scale, em.scale)
        assert tuple(map(str, layer.units)) == tuple(map(str, em.units))
        assert layer.translate[0] == pytest.approx(3 * NM)  # the first sample lies on the drawn slice
        assert in_view(viewer, layer), name
    gen_masks = viewer.layers["generated (tiny) masks"]
    z0 = int(round(gen_masks.world_to_data(viewer.dims.point)[0]))
    np.testing.assert_array_equal(gen_masks.data[z0], drawn.data[3])  # pixel-aligned with the drawing
    assert viewer.layers.extent.units is not None and str(viewer.layers.extent.units[-1]) == "nanometer"
    assert not unit_warnings(notes), unit_warnings(notes)


def test_a_generated_stack_segments_back_into_its_masks_in_one_click(make_napari_viewer, qtbot, user_dir, notes):
    """The shipped generator's new pairs, segmented by the shipped model through the Layers menu."""
    from napari_cellgen._qt.generate_widget import GenerateWidget
    from napari_cellgen._qt.menu import segment_selected

    viewer = make_napari_viewer(show=True)
    em = viewer.add_image(np.zeros((4, 300, 300), np.uint8), name="em volume", scale=(NM,) * 3,
                          units=("nm",) * 3)
    w = GenerateWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.reset_choices()
    assert "mito-gen" in w.generator.choices
    w.generator.value, w.mode.value, w.n.value, w.seed.value = "mito-gen", "new pairs", 4, 3
    w.start()
    qtbot.waitUntil(lambda: "generated (mito-gen) masks" in viewer.layers, timeout=240000)
    image, masks = viewer.layers["generated (mito-gen)"], viewer.layers["generated (mito-gen) masks"]
    np.testing.assert_allclose(image.scale, em.scale)  # the generator card's 5 nm, like the volume
    assert in_view(viewer, image)
    assert viewer.layers.selection.active is image

    segment_selected(viewer)  # Layers › Segment › Segment mitochondria: one click
    name = "generated (mito-gen) mitochondria"
    qtbot.waitUntil(lambda: name in viewer.layers, timeout=120000)
    seg = viewer.layers[name]
    draw(viewer, qtbot)
    np.testing.assert_allclose(seg.scale, image.scale)
    p, m = np.asarray(seg.data) > 0, np.asarray(masks.data) > 0
    ious = [(a & b).sum() / max(1, (a | b).sum()) for a, b in zip(p, m, strict=True)]
    assert np.mean(ious) >= 0.8, ious
    messages = [str(n.message) for n in notes]
    assert any("separate images" in t for t in messages), messages  # the switch is reported
    assert not unit_warnings(notes), unit_warnings(notes)
