"""The docks' interop buttons: Train › "Export to bioimage.io", Segment › "Open bioimage.io model"
and "Save labels into the OME-Zarr"."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_cellgen.models.store import save_model
from napari_cellgen.models.unet import UNet

TIMEOUT = 30000
CARD = {"context": 0, "scale": 1.0, "tile": 64, "overlap": 16,
        "normalization": {"kind": "percentile", "low": 1.0, "high": 99.0}, "name": "tiny"}


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("CELLGEN_USER_DIR", str(tmp_path / "user"))
    torch.manual_seed(0)
    save_model(tmp_path / "user" / "models" / "tiny", UNet(1, 1, base=2, depth=1), dict(CARD))
    from napari_cellgen.segment import pipeline

    pipeline._MODEL_CACHE.clear()
    return "tiny"


def test_train_dock_exports_and_segment_dock_runs_the_package(make_napari_viewer, qtbot, tiny, tmp_path, notes,
                                                               monkeypatch):
    from napari_cellgen._qt import interop
    from napari_cellgen._qt.segment_widget import SegmentWidget
    from napari_cellgen._qt.train_widget import TrainWidget
    from napari_cellgen.models.store import load_model

    monkeypatch.setattr(interop, "OPENED_PACKAGES", {})
    viewer = make_napari_viewer()
    img = np.zeros((3, 48, 64), np.uint8)
    img[:, 10:30, 12:40] = 200
    viewer.add_image(img, name="em")
    train = TrainWidget(viewer)
    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(train, name="Train")
    viewer.window.add_dock_widget(seg, name="Segment")
    train.base.reset_choices()
    train.base.value = "tiny"

    out = tmp_path / "tiny-export"  # ".zip" is added
    worker = train.export_bioimageio(out)
    assert worker is not None
    qtbot.waitUntil(lambda: train.export_btn.enabled and "exported" in train.status.value, timeout=TIMEOUT)
    package = tmp_path / "tiny-export.zip"
    assert package.is_file()
    model, card = load_model(package)
    assert card["name"] == "tiny" and card["architecture"]["in_channels"] == 1

    # a foreign zip is refused in one line; the model list is unchanged
    import zipfile

    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("rdf.yaml", "type: model\nname: other\n")
    before = list(seg.model.choices)
    seg.open_package(str(tmp_path / "other.zip"))
    assert list(seg.model.choices) == before
    assert any("cellgen export" in str(n.message) for n in notes)

    seg.open_package(str(package))
    assert seg.model.value == str(package) and seg.options().model == str(package)
    seg.min_size.value = 0
    seg.start()
    qtbot.waitUntil(lambda: "em mitochondria" in viewer.layers and seg._ended, timeout=TIMEOUT)
    assert viewer.layers["em mitochondria"].metadata["cellgen_model_path"] == str(package)


def test_segment_dock_saves_labels_into_the_ome_zarr(make_napari_viewer, qtbot, tiny, tmp_path, notes):
    from napari_cellgen._qt.segment_widget import SegmentWidget
    from napari_cellgen.io.zarr_io import write_zarr

    img = np.zeros((3, 48, 64), np.uint8)
    img[:, 10:30, 12:40] = 200
    path = tmp_path / "em.ome.zarr"
    write_zarr(path, img, pixel_size=(5.0, 5.0, 5.0))
    image_attrs = (path / ".zattrs").read_bytes()
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin="napari-cellgen")
    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg, name="Segment")
    seg.reset_choices()
    seg.image.value = layer

    seg.save_into_zarr()  # nothing segmented yet: one clear line
    assert any("segment it first" in str(n.message) for n in notes)

    labels = np.zeros(img.shape, np.uint32)
    labels[:, 10:30, 12:40] = 1
    labels[1, 40:44, 50:60] = 2
    viewer.add_labels(labels, name=f"{layer.name} mitochondria")
    seg.save_into_zarr()
    qtbot.waitUntil(lambda: (path / "labels" / ".zattrs").is_file(), timeout=TIMEOUT)
    qtbot.waitUntil(lambda: seg._zarr_worker is None or not seg._zarr_worker.is_running, timeout=TIMEOUT)
    import zarr

    assert json.loads((path / "labels" / ".zattrs").read_text())["labels"] == ["mitochondria"]
    np.testing.assert_array_equal(zarr.open_array(str(path / "labels" / "mitochondria" / "0"))[:], labels)
    assert (path / ".zattrs").read_bytes() == image_attrs
