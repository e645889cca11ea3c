import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from _generate_helpers import tiny_generator  # noqa: E402


@pytest.fixture
def registered_tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLGEN_USER_DIR", str(tmp_path / "user" / "models"))
    from napari_cellgen.generate.store import user_generators_dir

    tiny_generator(user_generators_dir() / "tiny")
    return "tiny"


def _widget(viewer, qtbot):
    from napari_cellgen._qt.generate_widget import GenerateWidget

    w = GenerateWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.reset_choices()
    return w


def test_drawn_masks_generate_aligned_images(make_napari_viewer, qtbot, registered_tiny):
    from napari_cellgen.train.pool import POOL

    POOL.clear()
    viewer = make_napari_viewer()
    mask = np.zeros((32, 32), np.uint32)
    mask[8:20, 10:24] = 1
    viewer.add_labels(mask, name="drawn")
    w = _widget(viewer, qtbot)
    assert "tiny" in w.generator.choices
    w.generator.value = "tiny"
    w.labels.value = viewer.layers["drawn"]
    w.n.value, w.steps.value = 2, 2
    w.to_pool.value = True
    w.start()
    name = "generated (tiny)"
    qtbot.waitUntil(lambda: f"{name} masks" in viewer.layers, timeout=30000)
    images = viewer.layers[name].data
    assert images.shape == (2, 32, 32) and images.dtype == np.uint8
    np.testing.assert_array_equal(viewer.layers[f"{name} masks"].data[0], mask)
    assert len(POOL) == 2
    POOL.clear()


def test_new_pairs_and_errors(make_napari_viewer, qtbot, registered_tiny, monkeypatch):
    errors = []
    monkeypatch.setattr("napari.utils.notifications.show_error", errors.append)
    viewer = make_napari_viewer()
    viewer.add_labels(np.zeros((32, 32), np.uint32), name="empty")
    w = _widget(viewer, qtbot)
    w.generator.value = "tiny"
    w.labels.value = viewer.layers["empty"]
    w.start()
    assert errors and "empty" in errors[-1]
    w.mode.value = "unconditional"
    w.n.value, w.steps.value = 3, 2
    w.start()
    qtbot.waitUntil(lambda: "generated (tiny)" in viewer.layers, timeout=30000)
    assert viewer.layers["generated (tiny)"].data.shape == (3, 32, 32)
    assert "generated (tiny) masks" not in viewer.layers


def test_cancel_stops_generation(make_napari_viewer, qtbot, registered_tiny):
    viewer = make_napari_viewer()
    w = _widget(viewer, qtbot)
    w.generator.value = "tiny"
    w.mode.value = "unconditional"
    w.n.value, w.steps.value = 64, 200
    w.start()
    qtbot.waitUntil(lambda: w.progress.value > 2, timeout=30000)
    w.cancel()
    qtbot.waitUntil(lambda: w.run_btn.enabled, timeout=30000)
    assert "generated (tiny)" not in viewer.layers
    assert w.status.value == "cancelled"
    # the worker's thread really ends (it does not keep sampling in the background)
    from qtpy.QtCore import QThreadPool

    qtbot.waitUntil(lambda: QThreadPool.globalInstance().activeThreadCount() == 0, timeout=30000)
