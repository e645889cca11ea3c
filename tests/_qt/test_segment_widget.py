import numpy as np
import pytest

from napari_cellgen.models.store import save_model
from napari_cellgen.models.unet import UNet

CARD = {"context": 0, "scale": 1.0, "tile": 32, "overlap": 8,
        "normalization": {"kind": "percentile", "low": 1.0, "high": 99.0}, "name": "tiny"}


@pytest.fixture
def tiny_model(tmp_path, monkeypatch):
    """A registered (untrained) model; tests replace its forward pass with a fixed rule."""
    monkeypatch.setenv("CELLGEN_USER_DIR", str(tmp_path / "user"))
    net = UNet(1, 1, base=2, depth=1)
    folder = tmp_path / "user" / "models" / "tiny"
    save_model(folder, net, dict(CARD))
    return "tiny"


def _image():
    img = np.zeros((3, 40, 48), np.uint8)
    img[:, 8:20, 10:30] = 200
    return img


def _widget_with(make_napari_viewer, monkeypatch, forward):
    """A viewer with the test image and a Segment dock on the tiny model, ``forward`` as its network."""
    from napari_cellgen._qt.segment_widget import SegmentWidget
    from napari_cellgen.segment import pipeline

    monkeypatch.setattr("napari_cellgen.segment.predict.make_forward", lambda model, device="cpu", tta=1: forward)
    pipeline._MODEL_CACHE.clear()
    viewer = make_napari_viewer()
    viewer.add_image(_image(), name="em")
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.reset_choices()
    w.model.value, w.min_size.value = "tiny", 10
    return viewer, w


def test_segment_widget_makes_labels_with_features(make_napari_viewer, qtbot, tiny_model, monkeypatch):
    # a deterministic stand-in for the network: foreground = bright input
    viewer, w = _widget_with(make_napari_viewer, monkeypatch, lambda batch: (batch[:, 0] > 0.5).astype(np.float32))
    assert "tiny" in w.model.choices and w.model.value == "tiny"
    assert w.options().tta == 2  # the default: the image and its 180° rotation
    w.views.value = 4
    assert w.options().tta == 4
    w.views.value = 2
    w.start()
    qtbot.waitUntil(lambda: "em mitochondria" in viewer.layers, timeout=20000)
    layer = viewer.layers["em mitochondria"]
    assert layer.data.shape == (3, 40, 48)
    assert layer.data.max() == 1  # one object through the stack
    assert list(layer.features["label"]) == [1]
    assert layer.features["volume_px"][0] == 3 * 12 * 20
    assert layer.metadata["cellgen_model"] == "tiny"

    # the user paints a correction; re-running must not overwrite it
    layer.paint((0, 0, 0), 5, refresh=True)
    w.start()
    qtbot.waitUntil(lambda: "em mitochondria [2]" in viewer.layers, timeout=20000)
    assert layer.data[0, 0, 0] == 5


def test_menu_command_segments_selected_layer(make_napari_viewer, qtbot, tiny_model, monkeypatch):
    from napari_cellgen._qt.menu import segment_selected
    from napari_cellgen.segment import pipeline

    monkeypatch.setattr("napari_cellgen.models.store.DEFAULT_MODEL", "tiny")
    monkeypatch.setattr("napari_cellgen.segment.predict.make_forward",
                        lambda m, device="cpu", tta=1: lambda b: (b[:, 0] > 0.5).astype(np.float32))
    pipeline._MODEL_CACHE.clear()
    viewer = make_napari_viewer()
    viewer.add_image(_image()[0], name="slice")
    segment_selected(viewer)
    qtbot.waitUntil(lambda: "slice mitochondria" in viewer.layers, timeout=20000)
    assert viewer.layers["slice mitochondria"].features["area_px"][0] == 12 * 20


def test_menu_command_without_image_layer_says_so(make_napari_viewer, monkeypatch):
    from napari_cellgen._qt import menu

    errors = []
    monkeypatch.setattr("napari.utils.notifications.show_error", errors.append)
    viewer = make_napari_viewer()
    assert menu.segment_selected(viewer) is None
    assert errors and "image layer" in errors[0]


def test_cancel_stops_work(make_napari_viewer, qtbot, tiny_model, monkeypatch):
    import time

    from napari_cellgen._qt.segment_widget import SegmentWidget
    from napari_cellgen.segment import pipeline

    calls = []

    def slow_forward(model, device="cpu", tta=1):
        def fn(batch):
            calls.append(1)
            time.sleep(0.05)
            return np.zeros(batch[:, 0].shape, np.float32)

        return fn

    monkeypatch.setattr("napari_cellgen.segment.predict.make_forward", slow_forward)
    pipeline._MODEL_CACHE.clear()
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((50, 64, 64), np.uint8), name="big")
    w = SegmentWidget(viewer)
    w.reset_choices()
    w.model.value = "tiny"
    w.start()
    qtbot.waitUntil(lambda: len(calls) >= 2, timeout=10000)
    w.cancel()
    qtbot.waitUntil(lambda: w.run_btn.enabled, timeout=10000)
    n = len(calls)
    qtbot.wait(300)
    assert len(calls) == n < 50 * 4  # stopped long before all tiles were done
    assert "big mitochondria" not in viewer.layers
    assert w.status.value == "cancelled"


def test_segment_widget_on_a_dask_cluster(make_napari_viewer, qtbot, tiny_model, monkeypatch, notes):
    from pathlib import Path

    import distributed

    from napari_cellgen.segment import cluster

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", 2.0)
    viewer, w = _widget_with(make_napari_viewer, monkeypatch, lambda batch: (batch[:, 0] > 0.5).astype(np.float32))
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as lc:
        w.scheduler.value = lc.scheduler_address
        w.start()
        qtbot.waitUntil(lambda: "em mitochondria" in viewer.layers, timeout=60000)
    layer = viewer.layers["em mitochondria"]
    assert layer.data.shape == (3, 40, 48) and layer.data.max() == 1
    assert layer.features["volume_px"][0] == 3 * 12 * 20  # measured blockwise, as in memory
    assert Path(layer.metadata["cellgen_labels_zarr"]).is_dir()
    qtbot.waitUntil(lambda: w.run_btn.enabled, timeout=20000)

    w.scheduler.value = "my-cluster"  # not an address: refused before any thread starts
    w.start()
    assert any("not a dask scheduler address" in str(n.message) for n in notes)
    w.scheduler.value = "tcp://127.0.0.1:9"  # nothing listens there
    w.start()
    qtbot.waitUntil(lambda: any("cannot reach" in str(n.message) for n in notes), timeout=30000)


def test_a_runtime_error_in_a_job_reaches_the_user(make_napari_viewer, qtbot, tiny_model, monkeypatch, notes):
    """superqt drops RuntimeErrors from generator workers; torch raises them (e.g. out of memory)."""

    def failing_forward(batch):
        raise RuntimeError("DefaultCPUAllocator: not enough memory")

    viewer, w = _widget_with(make_napari_viewer, monkeypatch, failing_forward)
    w.start()
    qtbot.waitUntil(lambda: any("not enough memory" in str(n.message) for n in notes), timeout=20000)
    assert w.status.value.startswith("error")


def test_int8_from_the_dock_finds_what_fp32_finds(make_napari_viewer, qtbot, tmp_path, monkeypatch, notes):
    from napari_cellgen._qt.segment_widget import SegmentWidget
    from napari_cellgen._sample_data import sample_paths
    from napari_cellgen.io import read_stack

    monkeypatch.setenv("CELLGEN_USER_DIR", str(tmp_path / "user"))
    image = np.asarray(read_stack(sample_paths()[0])[0])[:2]
    viewer = make_napari_viewer()
    viewer.add_image(image, name="em")
    w = SegmentWidget(viewer)  # the shipped model, as a new user finds it
    viewer.window.add_dock_widget(w)
    w.reset_choices()
    assert w.precision.value == "auto"  # int8 on this CPU
    w.precision.value = "fp32"
    w.start()
    qtbot.waitUntil(lambda: "em mitochondria" in viewer.layers, timeout=60000)
    qtbot.waitUntil(lambda: w.run_btn.enabled, timeout=20000)
    assert viewer.layers["em mitochondria"].metadata["cellgen_precision"] == "fp32"
    w.precision.value = "int8"
    assert w.options().precision == "int8"
    w.scheduler.value = "tcp://127.0.0.1:9"  # a cluster and int8: refused before any thread starts
    w.start()
    assert any("int8 runs in this process only" in str(n.message) for n in notes)
    assert w.run_btn.enabled
    w.scheduler.value = ""
    layer = viewer.layers["em mitochondria"]
    fp = layer.data > 0
    w.start()  # an unpainted result is replaced in place
    qtbot.waitUntil(lambda: "(updated)" in str(notes[-1].message) if notes else False, timeout=60000)
    assert layer.metadata["cellgen_precision"] == "int8"  # made by the int8 network
    q = layer.data > 0
    assert fp.any() and (fp & q).sum() / (fp | q).sum() > 0.95
    assert "em mitochondria [2]" not in viewer.layers
    w.precision.value = "auto"
    n_notes = len(notes)
    w.start()
    qtbot.waitUntil(lambda: len(notes) > n_notes and "(updated)" in str(notes[-1].message), timeout=60000)
    assert layer.metadata["cellgen_precision"] == "int8"  # "auto" ran the int8 network on this CPU


def test_thick_sections_from_the_dock_use_the_model_for_other_em(make_napari_viewer, qtbot):
    """The user opens an ssTEM-like stack (sections 30 nm apart, no pixel size) and presses Segment."""
    from napari_cellgen._qt.segment_widget import SegmentWidget
    from napari_cellgen._sample_data import sample_paths
    from napari_cellgen.io import read_stack
    from napari_cellgen.models.store import THICK_SECTIONS_MODEL

    img_path, gt_path = sample_paths()
    viewer = make_napari_viewer()
    viewer.add_image(np.asarray(read_stack(img_path)[0])[::6], name="sstem")
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.reset_choices()
    assert w.model.value == "auto"  # nothing chosen: the plugin picks
    w.views.value = 1
    w.start()
    qtbot.waitUntil(lambda: "sstem mitochondria" in viewer.layers and w._ended, timeout=60000)
    layer = viewer.layers["sstem mitochondria"]
    assert layer.metadata["cellgen_model"] == THICK_SECTIONS_MODEL
    assert f"segmented with {THICK_SECTIONS_MODEL}" in w.status.value
    truth = np.asarray(read_stack(gt_path)[0])[::6] > 0
    assert np.logical_and(layer.data > 0, truth).sum() / np.logical_or(layer.data > 0, truth).sum() > 0.6
