"""The correction loop as a user clicks it: segment, paint a missed object and erase a false one,
"Fine-tune on my corrections", segment again -- the painted object is found and the erased one gone."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _train_helpers import SQUARE, STRIPES, correction_scene, train_disk_model  # noqa: E402

TIMEOUT = 120000


def test_fine_tuning_learns_the_painted_corrections(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from napari_cellgen._qt.segment_widget import SegmentWidget
    from napari_cellgen._qt.train_widget import TrainWidget
    from napari_cellgen.segment import pipeline

    monkeypatch.setenv("CELLGEN_USER_DIR", str(tmp_path / "user"))
    torch.set_num_threads(1)
    torch.manual_seed(0)
    train_disk_model(tmp_path / "run", register_as="blobs")
    pipeline._MODEL_CACHE.clear()

    viewer = make_napari_viewer()
    viewer.add_image(correction_scene(0)[0], name="em")
    seg, tr = SegmentWidget(viewer), TrainWidget(viewer)
    viewer.window.add_dock_widget(seg, name="Segment")
    viewer.window.add_dock_widget(tr, name="Train")
    seg.reset_choices()
    seg.model.value, seg.min_size.value = "blobs", 20
    seg.start()
    qtbot.waitUntil(lambda: "em mitochondria" in viewer.layers, timeout=TIMEOUT)
    labels = viewer.layers["em mitochondria"]
    assert (labels.data[(1, *SQUARE)] > 0).mean() > 0.9  # the mistakes the user sees
    assert (labels.data[(1, *STRIPES)] > 0).mean() < 0.5

    # paint as the brush and eraser do (through the undo history and the paint event)
    ys, xs = np.mgrid[STRIPES]
    labels.data_setitem((np.full(ys.size, 1), ys.ravel(), xs.ravel()), int(labels.data.max()) + 1)
    ys, xs = np.mgrid[SQUARE]
    labels.data_setitem((np.full(ys.size, 1), ys.ravel(), xs.ravel()), 0)
    assert labels.metadata["cellgen_edited_slices"] == [1]

    viewer.layers.selection.active = labels
    tr.steps.value, tr.patch.value, tr.lr.value = 120, 48, "5e-3"
    tr.finetune_on_corrections()
    qtbot.waitUntil(lambda: tr._worker is None, timeout=TIMEOUT)
    new = tr.name.value
    assert seg.model.value == new  # the Segment dock now uses the fine-tuned model
    from napari_cellgen.models.store import read_card, resolve

    card = read_card(resolve(new))
    assert card["metrics"]["step"] == 120 and card["metrics"]["selection"] == "last"
    assert card["training"]["corrected_pixels"] > 200

    viewer.layers.selection.active = viewer.layers["em"]
    seg.image.value = viewer.layers["em"]
    n_before = len(viewer.layers)
    seg.start()
    qtbot.waitUntil(lambda: len(viewer.layers) > n_before, timeout=TIMEOUT)
    again = viewer.layers[-1]
    assert again is not labels and again.data.shape == labels.data.shape
    assert (again.data[(1, *STRIPES)] > 0).mean() > 0.5, "the painted object is not found"
    assert (again.data[(1, *SQUARE)] > 0).mean() < 0.5, "the erased object came back"
    assert "kept the weights of step 120, the last" in tr.status.value  # what was kept, and why
