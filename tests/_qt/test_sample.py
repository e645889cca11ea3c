"""The plugin inside a real napari viewer: sample data, docked widget, reader/writer round trip."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellgen.io import read_stack

PLUGIN = "napari-cellgen"


def test_napari_lists_reader_writer_sample_and_widget(make_napari_viewer, tmp_path):
    from npe2 import PluginManager

    make_napari_viewer()  # the plugin manager is filled when napari starts
    pm = PluginManager.instance()
    assert PLUGIN in {m.name for m in pm.iter_manifests()}
    path = tmp_path / "x.tif"
    assert PLUGIN in {r.plugin_name for r in pm.iter_compatible_readers([str(path)])}
    assert PLUGIN in {w.plugin_name for w in pm.iter_compatible_writers(["labels"])}
    assert PLUGIN in {w.plugin_name for w in pm.iter_compatible_writers(["image"])}
    assert PLUGIN in dict(pm.iter_sample_data())
    assert "EM stack" in {w.display_name for w in pm.iter_widgets() if w.plugin_name == PLUGIN}


def test_the_canvas_really_draws(make_napari_viewer):
    """The suite runs under a real X server (pytest-xvfb), not Qt's offscreen platform."""
    from qtpy.QtGui import QGuiApplication

    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "em_mito")
    assert QGuiApplication.platformName() != "offscreen"
    window = viewer.screenshot(canvas_only=False)  # also wakes the canvas of a hidden window
    canvas = viewer.screenshot(canvas_only=True)
    assert window.std() > 0
    assert canvas[..., :3].std() > 10, "the canvas is blank: is there an X server with OpenGL?"


def test_open_sample_shows_em_and_labels(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "em_mito")
    image, labels = viewer.layers
    assert image._type_string == "image" and labels._type_string == "labels"
    assert image.data.shape == labels.data.shape == (8, 512, 512)
    assert image.data.dtype == np.uint8
    assert tuple(image.scale) == tuple(labels.scale) == (5.0, 5.0, 5.0)
    assert image.metadata["pixel_size_nm"] == (5.0, 5.0, 5.0)
    assert set(np.unique(labels.data)) == {0, 1}
    assert 0.02 < (labels.data > 0).mean() < 0.15  # a few mitochondria, not noise


def test_dock_the_em_stack_widget_with_the_sample(make_napari_viewer):
    from napari_cellgen._qt.stack_widget import EMStackWidget

    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "em_mito")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "EM stack")
    assert isinstance(widget, EMStackWidget)
    viewer.layers.selection.active = viewer.layers[0]
    assert widget.info_labels["shape"].text() == "8 × 512 × 512"
    assert widget.info_labels["pixel_size"].text() == "5 × 5 × 5 nm"
    assert widget.info_labels["memory"].text().startswith("2.0 MiB")


@pytest.mark.parametrize("kind", ["labels", "image"])
def test_writer_round_trip_through_napari(make_napari_viewer, tmp_path, kind):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "em_mito")
    layer = viewer.layers[1] if kind == "labels" else viewer.layers[0]
    path = tmp_path / f"{kind}.tif"
    written = layer.save(str(path), plugin=PLUGIN)
    assert written == [str(path)]
    data, meta = read_stack(path)
    np.testing.assert_array_equal(data, np.asarray(layer.data))
    assert meta["scale"] == (5.0, 5.0, 5.0)
    assert meta["layer_type"] == kind
    (reopened,) = viewer.open(str(path), plugin=PLUGIN)
    assert reopened._type_string == kind
    assert tuple(reopened.scale) == (5.0, 5.0, 5.0)


def test_every_widget_in_the_manifest_docks_from_the_plugins_menu(make_napari_viewer):
    """napari passes the viewer only to an ``__init__`` parameter annotated ``napari.viewer.Viewer``
    (with ``from __future__ import annotations``, write it unquoted) or named ``napari_viewer``."""
    from npe2 import PluginManifest

    viewer = make_napari_viewer()
    manifest = PluginManifest.from_distribution(PLUGIN)
    failed = {}
    for contribution in manifest.contributions.widgets:
        try:
            viewer.window.add_plugin_dock_widget(PLUGIN, contribution.display_name)
        except Exception as exc:  # collect them all, to report every broken widget at once
            failed[contribution.display_name] = f"{type(exc).__name__}: {exc}"
    assert not failed, failed
