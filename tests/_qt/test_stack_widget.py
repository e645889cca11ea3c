"""The "EM stack" dock widget: open files and folders, show stack facts, percentile contrast."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_cellgen.io import LazyStack, write_tiff


@pytest.fixture
def widget(make_napari_viewer):
    from napari_cellgen._qt.stack_widget import EMStackWidget

    viewer = make_napari_viewer()
    w = EMStackWidget(viewer)
    viewer.window.add_dock_widget(w, name="EM stack")
    return w


@pytest.fixture
def notes(monkeypatch):
    """Capture napari notifications shown by the reader and the widget."""
    import napari.utils.notifications as nt

    seen = []
    for kind in ("show_info", "show_warning", "show_error"):
        monkeypatch.setattr(nt, kind, lambda msg, kind=kind: seen.append((kind, msg)))
    return seen


def test_empty_viewer(widget):
    assert "No image layer" in widget.layer_label.text()
    assert not widget.apply_btn.isEnabled()


def test_open_file_shows_shape_dtype_pixel_size_memory(widget, tmp_path):
    img = np.arange(3 * 20 * 30, dtype=np.uint16).reshape(3, 20, 30)
    write_tiff(tmp_path / "em.tif", img, (40.0, 4.0, 4.0))
    (layer,) = widget.open_path(str(tmp_path / "em.tif"))
    assert tuple(layer.scale) == (40.0, 4.0, 4.0)
    assert widget.viewer.layers.selection.active is layer
    text = {k: label.text() for k, label in widget.info_labels.items()}
    assert text == {
        "shape": "3 × 20 × 30",
        "dtype": "uint16",
        "pixel_size": "40 × 4 × 4 nm",
        "memory": "3.5 KiB (in memory)",
    }
    assert "em" in widget.layer_label.text()


def test_open_folder_of_slices(widget, tmp_path):
    for i in range(4):
        iio.imwrite(tmp_path / f"s{i}.png", np.full((10, 12), i * 10, np.uint8))
    (layer,) = widget.open_path(str(tmp_path))
    assert layer.data.shape == (4, 10, 12)
    assert widget.info_labels["pixel_size"].text() == "unknown (1 pixel)"


def test_corrupt_file_is_a_notification_not_a_crash(widget, tmp_path, notes):
    (tmp_path / "cut.tif").write_bytes(b"II*\x00" + b"\x00" * 64)
    assert widget.open_path(str(tmp_path / "cut.tif")) == []
    assert len(widget.viewer.layers) == 0
    assert any(kind == "show_error" and "cut.tif" in msg for kind, msg in notes)


def test_rgb_file_is_converted_with_a_notification(widget, tmp_path, notes):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 1] = 200
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    (layer,) = widget.open_path(str(tmp_path / "rgb.tif"))
    assert layer.data.shape == (16, 16) and not layer.rgb
    assert any(kind == "show_warning" and "grayscale" in msg for kind, msg in notes)


def test_large_stack_opens_lazily_and_contrast_reads_a_subsample(widget, tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    img = rng.integers(1000, 3000, (30, 64, 64), dtype=np.uint16)
    img[:, :4, :4] = 60000  # a few hot pixels the percentiles must ignore
    write_tiff(tmp_path / "big.tif", img, (10.0, 5.0, 5.0), compression="zlib")
    monkeypatch.setattr("napari_cellgen.io.stack.default_memory_limit", lambda: img.nbytes // 10)
    (layer,) = widget.open_path(str(tmp_path / "big.tif"))
    assert isinstance(layer.data, LazyStack)
    assert layer.data.reads < img.shape[0] // 2  # napari drew one slice, not the stack
    assert "read slice by slice" in widget.info_labels["memory"].text()
    widget.low.setValue(1.0)
    widget.high.setValue(99.0)
    lo, hi = widget.apply_percentiles()
    assert tuple(layer.contrast_limits) == (lo, hi)
    assert 1000 <= lo < hi <= 3000
    assert layer.data.reads < img.shape[0] // 2
