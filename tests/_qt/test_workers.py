"""The docks' one job runner (_qt/_workers.Job): a failure shows as an error, a cancel as "cancelled".

The jobs here are fakes (no model, no torch), so each test takes well under a second of work.
"""

from __future__ import annotations

import functools
import threading
import time

import numpy as np
import pytest

from napari_cellgen._progress import Progress

TIMEOUT = 10000


def _failing(*args, **kwargs):
    yield Progress(0, 10, "work")
    raise RuntimeError("CUDA out of memory")  # superqt drops RuntimeErrors unless surfaced


_in_step, _go_on = threading.Event(), threading.Event()


def _failing_after_cancel(*args, **kwargs):
    yield Progress(0, 10, "work")
    _in_step.set()  # mid-step when Cancel is pressed
    _go_on.wait(TIMEOUT / 1000)
    raise RuntimeError("CUDA out of memory")


def _endless(*args, stop=None, stage="work", **kwargs):
    i = 0
    while stop is None or not stop():
        i += 1
        yield Progress(i, 10**6, stage)
        time.sleep(0.01)
    return {"stopped": True, "registered": None}


def _returning(*args, **kwargs):
    yield Progress(1, 1, "work")
    return 42


# -- the Job itself -------------------------------------------------------------------------------
@pytest.mark.parametrize(("func", "cancel", "polite", "state"), [
    (_returning, False, False, "done"),
    (_failing, False, False, "failed"),
    (_failing_after_cancel, True, False, "failed"),  # a failure stays a failure, even after Cancel
    (_endless, True, False, "cancelled"),
    (_endless, True, True, "done"),  # a polite stop: the job ends itself and returns
])
def test_job_state_comes_from_the_worker(qtbot, func, cancel, polite, state):
    from napari_cellgen._qt._workers import Job

    seen = {"progress": [], "done": [], "error": [], "end": []}
    job = Job(func, polite_stop=polite, on_progress=seen["progress"].append, on_done=seen["done"].append,
              on_error=seen["error"].append, on_end=seen["end"].append)
    assert job.running
    if func is _failing_after_cancel:
        assert _in_step.wait(TIMEOUT / 1000)
        job.cancel()
        _go_on.set()
    elif cancel:
        qtbot.waitUntil(lambda: bool(seen["progress"]), timeout=TIMEOUT)
        job.cancel()
    qtbot.waitUntil(lambda: bool(seen["end"]), timeout=TIMEOUT)
    assert job.state == state and seen["end"] == [state] and not job.running
    assert len(seen["done"]) == (state == "done") and len(seen["error"]) == (state == "failed")
    if state == "failed":
        assert "CUDA out of memory" in str(seen["error"][0])
    job.cancel()  # after the end: nothing happens
    assert job.state == state


# -- the docks ------------------------------------------------------------------------------------
def _generate_dock(make_napari_viewer, monkeypatch, job):
    from napari_cellgen._qt.generate_widget import GenerateWidget

    monkeypatch.setattr("napari_cellgen.generate.store.list_generators", lambda: ["fake"])
    monkeypatch.setattr("napari_cellgen.generate.sample.sample", job)
    viewer = make_napari_viewer()
    w = GenerateWidget(viewer)
    w.generator.value, w.mode.value = "fake", "unconditional"
    return viewer, w


def test_generate_dock_shows_a_failure_as_an_error(make_napari_viewer, qtbot, monkeypatch, notes):
    viewer, w = _generate_dock(make_napari_viewer, monkeypatch, _failing)
    w.start()
    qtbot.waitUntil(lambda: w.run_btn.enabled, timeout=TIMEOUT)
    assert w.status.value == "error: CUDA out of memory", w.status.value
    assert w._job.state == "failed"
    assert any("Generation failed: CUDA out of memory" in str(n.message) for n in notes)
    assert not w.cancel_btn.enabled and len(viewer.layers) == 0


def test_generate_dock_shows_a_cancel_as_cancelled(make_napari_viewer, qtbot, monkeypatch, notes):
    viewer, w = _generate_dock(make_napari_viewer, monkeypatch, _endless)
    w.start()
    assert w.status.value == "generating..." and w.cancel_btn.enabled
    qtbot.waitUntil(lambda: w.progress.value > 1, timeout=TIMEOUT)
    w.cancel()
    qtbot.waitUntil(lambda: w.run_btn.enabled, timeout=TIMEOUT)
    assert w.status.value == "cancelled" and w._job.state == "cancelled"
    assert not any("failed" in str(n.message) for n in notes)


def _segment_dock(make_napari_viewer, monkeypatch, job):
    from napari_cellgen._qt.segment_widget import SegmentWidget

    monkeypatch.setattr("napari_cellgen.segment.pipeline.segment_iter", job)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 32, 32), np.uint8), name="em")
    w = SegmentWidget(viewer)
    w.reset_choices()
    return viewer, w


def test_segment_dock_failure_and_cancel(make_napari_viewer, qtbot, monkeypatch, notes):
    viewer, w = _segment_dock(make_napari_viewer, monkeypatch, _failing)
    w.start()
    qtbot.waitUntil(lambda: w.run_btn.enabled, timeout=TIMEOUT)
    assert w.status.value == "error: CUDA out of memory" and w._job.state == "failed"
    assert any("Segmentation failed" in str(n.message) for n in notes)

    monkeypatch.setattr("napari_cellgen.segment.pipeline.segment_iter", _endless)
    w.start()
    qtbot.waitUntil(lambda: w.progress.value > 1, timeout=TIMEOUT)
    w.cancel()
    qtbot.waitUntil(lambda: w.run_btn.enabled, timeout=TIMEOUT)
    assert w.status.value == "cancelled" and w._job.state == "cancelled"
    assert "em mitochondria" not in viewer.layers


def test_train_dock_failure_and_polite_stop(make_napari_viewer, qtbot, monkeypatch, notes):
    from napari_cellgen._qt.train_widget import TrainWidget

    def no_estimate(cfg):
        raise ValueError("not measured in this test")

    monkeypatch.setattr("napari_cellgen.train.estimate.seconds_per_step", no_estimate)
    monkeypatch.setattr("napari_cellgen.train.loop.train_model", _failing)
    viewer = make_napari_viewer()
    img = viewer.add_image(np.zeros((3, 64, 64), np.uint8), name="em")
    mask = np.zeros((3, 64, 64), np.uint8)
    mask[:, 10:30, 10:30] = 1
    lab = viewer.add_labels(mask, name="em mitochondria")
    w = TrainWidget(viewer)
    w.images.value, w.labels.value = [img], [lab]
    w.base.value = "scratch"
    w.start()
    qtbot.waitUntil(lambda: w._job is None, timeout=TIMEOUT)
    assert w.status.value == "failed: CUDA out of memory", w.status.value  # (the Train dock says "failed")
    assert any("CUDA out of memory" in str(n.message) for n in notes)
    assert w.start_btn.enabled and not w.stop_btn.enabled

    monkeypatch.setattr("napari_cellgen.train.loop.train_model", functools.partial(_endless, stage="train"))
    w.start()
    job = w._job
    assert w.stop_btn.enabled
    qtbot.waitUntil(lambda: w.progress.value > 1, timeout=TIMEOUT)
    w.stop()
    assert w.status.value.startswith("stopping")
    qtbot.waitUntil(lambda: w._job is None, timeout=TIMEOUT)
    assert job.state == "done"  # the job stopped itself and returned what it had
    assert w.status.value == "stopped before training began: nothing saved", w.status.value
