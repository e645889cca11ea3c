"""The Train dock widget in a headless viewer: train, stop, errors, the correction loop."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _train_helpers import blob_stack

from napari_cellgen._progress import run
from napari_cellgen.train.loop import TrainConfig, train_model

TIMEOUT = 60000


def _stack(n=3, seed=0):
    return blob_stack(n, seed=seed, fg=1)


@pytest.fixture
def tiny_base(tmp_path, monkeypatch):
    """A registered 4-feature U-Net ("tiny") to start from, and one torch thread (tiny tensors)."""
    monkeypatch.setenv("CELLGEN_USER_DIR", str(tmp_path / "user"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    img, mask = _stack(seed=1)
    cfg = TrainConfig(steps=2, scale=1.0, context=0, base=4, depth=2, patch=32, batch=2, tile=64, overlap=16)
    run(train_model([(img, mask, None)], tmp_path / "run", cfg, register_as="tiny"))
    yield "tiny"
    torch.set_num_threads(threads)



def _setup(make_napari_viewer, labels=None):
    from napari_cellgen._qt.segment_widget import SegmentWidget
    from napari_cellgen._qt.train_widget import TrainWidget

    viewer = make_napari_viewer()
    img, mask = _stack()
    im = viewer.add_image(img, name="em")
    lab = viewer.add_labels(mask if labels is None else labels, name="em mitochondria")
    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg, name="Segment")
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w, name="Train")
    w.images.value, w.labels.value = [im], [lab]
    w.base.value = "tiny"
    w.steps.value, w.patch.value, w.batch.value = 4, 32, 2
    w.val_fraction.value = 0.35  # 3 slices: one held out, so the plot has validation points
    return viewer, w, seg


def _messages(notes):
    return [str(n.message) for n in notes]


def test_trains_and_the_model_appears_in_the_segment_widget(make_napari_viewer, qtbot, tiny_base, notes):
    viewer, w, seg = _setup(make_napari_viewer)
    assert "tiny" in w.base.choices and "scratch" in w.base.choices
    w.name.value = "tuned"
    assert "tuned" not in seg.model.choices
    w.start()
    assert w.stop_btn.enabled and not w.start_btn.enabled
    qtbot.waitUntil(lambda: w._worker is None, timeout=TIMEOUT)
    assert "tuned" in seg.model.choices
    assert w.progress.value == 4 and "finished" in w.status.value
    assert w._history["step"] == [1, 2, 3, 4] and w._history["iou"]
    assert any("tuned" in m and "selected" in m for m in _messages(notes))
    assert "kept the" in w.status.value
    assert w.start_btn.enabled and not w.stop_btn.enabled


def test_hard_examples_are_mined_during_a_dock_run(make_napari_viewer, qtbot, tiny_base, notes):
    from napari_cellgen.models.store import load_model

    viewer, w, seg = _setup(make_napari_viewer)
    w.name.value, w.steps.value, w.hard.value = "hard", 10, 0.3
    statuses, shown = [], w._yielded

    def spy(p):  # what the user reads after each progress report
        shown(p)
        statuses.append(w.status.value)

    w._yielded = spy
    w.start()
    qtbot.waitUntil(lambda: w._worker is None, timeout=TIMEOUT)
    assert "finished" in w.status.value, w.status.value
    assert sum("finding hard examples" in s for s in statuses) == 5  # steps 0, 2, 4, 6, 8
    _, card = load_model("hard")
    assert card["training"]["config"]["hard_prob"] == pytest.approx(0.3)
    assert card["training"]["config"]["mine_every"] == 2


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="no native bfloat16 on this CPU")
def test_bf16_from_the_dock_trains_in_bfloat16(make_napari_viewer, qtbot, tiny_base, notes):
    from napari_cellgen.models.store import load_model

    viewer, w, seg = _setup(make_napari_viewer)
    w.name.value, w.precision.value = "fast", "bf16"
    w.start()
    assert not w.precision.enabled  # what the run was started with stays on screen
    qtbot.waitUntil(lambda: w._worker is None, timeout=TIMEOUT)
    assert "finished" in w.status.value, w.status.value
    model, card = load_model("fast")
    assert card["training"]["config"]["precision"] == "bf16"
    assert next(model.parameters()).dtype == torch.float32 and seg.model.value == "fast"


def test_stop_keeps_the_best_model(make_napari_viewer, qtbot, tiny_base, notes):
    from napari_cellgen.models.store import load_model

    viewer, w, seg = _setup(make_napari_viewer)
    w.steps.value, w.name.value = 100000, "stopped"
    w.start()
    qtbot.waitUntil(lambda: w.progress.value >= 2, timeout=TIMEOUT)
    w.stop_btn.changed.emit(True)  # what a click does
    qtbot.waitUntil(lambda: w._worker is None, timeout=TIMEOUT)
    assert "stopped early" in w.status.value
    assert w.progress.value < 100
    _, card = load_model("stopped")
    assert 2 <= card["metrics"]["step"] < 100
    assert "stopped" in seg.model.choices


def test_errors_become_notifications(make_napari_viewer, qtbot, tiny_base, notes):
    viewer, w, seg = _setup(make_napari_viewer, labels=np.zeros((3, 64, 64), np.uint8))
    w.start()  # the worker finds no annotated slice
    qtbot.waitUntil(lambda: w._worker is None, timeout=TIMEOUT)
    assert any("no annotated slice" in m for m in _messages(notes)), _messages(notes)
    assert w.status.value.startswith("failed") and w.start_btn.enabled

    viewer.add_labels(np.zeros((3, 32, 32), np.uint8), name="small")
    w.labels.value = [viewer.layers["small"]]
    w.start()  # refused before any thread starts
    assert w._worker is None
    assert any("must match" in m for m in _messages(notes))

    w.labels.value = [viewer.layers["em mitochondria"]]
    w.lr.value = "fast"
    w.start()
    assert w._worker is None and any("not a number" in m for m in _messages(notes))


def test_scratch_training_records_the_layers_pixel_size(make_napari_viewer, qtbot, tiny_base, notes):
    """A model trained from scratch in the dock carries the image layer's voxel size, so Segment can
    rescale other data to it."""
    from napari_cellgen.models.store import load_model

    viewer, w, seg = _setup(make_napari_viewer)
    viewer.layers["em"].metadata["pixel_size_nm"] = (40.0, 8.0, 8.0)  # as the reader stores it
    w.base.value, w.name.value = "scratch", "from-scratch"
    w.start()
    qtbot.waitUntil(lambda: w._worker is None, timeout=TIMEOUT)
    assert "finished" in w.status.value, w.status.value
    _, card = load_model("from-scratch")
    assert card["pixel_size_nm"] == [40.0, 8.0, 8.0]


def test_finetune_on_corrections_uses_the_painted_slices(make_napari_viewer, qtbot, tiny_base, notes):
    from napari_cellgen.models.store import list_models, load_model

    viewer, w, seg = _setup(make_napari_viewer)
    lab = viewer.layers["em mitochondria"]
    lab.metadata["cellgen_model"] = "tiny"  # what the Segment widget stores
    w.base.value = "scratch"
    lab.paint((1, 20, 20), 3, refresh=True)  # the user's correction on slice 1
    assert lab.metadata["cellgen_edited_slices"] == [1]
    viewer.layers.selection.active = lab
    before = set(list_models())
    w.finetune_on_corrections()
    assert w.base.value == "tiny" and w.slices.value == "1"
    qtbot.waitUntil(lambda: w._worker is None, timeout=TIMEOUT)
    new = set(list_models()) - before
    assert len(new) == 1 and new.pop().startswith("tiny-ft-")
    _, card = load_model(w.name.value)
    assert card["parent"] == "tiny"
    assert {tuple(s) for s in card["training"]["slices"]["train"]} == {(0, 1)}
