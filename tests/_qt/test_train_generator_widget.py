"""Training a generator from the Train dock: thread worker, progress, plot, Stop, registration."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _generate_helpers import disks, tiny_config

TIMEOUT = 60000


@pytest.fixture
def tiny_gen_config(monkeypatch):
    """The widget builds its GeneratorConfig from its fields; shrink the architecture for the tests."""
    import dataclasses

    import napari_cellgen.generate.train as gt

    seen, tiny = [], tiny_config()

    def factory(**kw):
        asked = ("vae_steps", "diffusion_steps", "minutes", "precision", "name", "notes", "adapt")
        keep = {k: v for k, v in kw.items() if k in asked}
        cfg = dataclasses.replace(tiny, **keep)
        seen.append(cfg)
        return cfg

    monkeypatch.setattr(gt, "GeneratorConfig", factory)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield seen
    torch.set_num_threads(threads)



def _setup(make_napari_viewer, with_labels=True):
    from napari_cellgen._qt.generate_widget import GenerateWidget
    from napari_cellgen._qt.train_widget import TrainWidget

    viewer = make_napari_viewer()
    img, mask = disks(z=5, size=64)
    im = viewer.add_image(img, name="em")
    lab = viewer.add_labels(mask, name="em mitochondria")
    gen_w = GenerateWidget(viewer)
    viewer.window.add_dock_widget(gen_w, name="Generate")
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w, name="Train")
    w.target.value = "generator"
    w.images.value = [im]
    w.labels.value = [lab] if with_labels else []
    w.vae_steps.value, w.diffusion_steps.value = 3, 3
    return viewer, w, gen_w


def _shown(widget) -> bool:  # the window is not shown in the tests: ask Qt what would be
    return not widget.native.isHidden()


def test_generator_mode_shows_its_own_fields(make_napari_viewer):
    viewer, w, _ = _setup(make_napari_viewer)
    assert _shown(w.vae_steps) and _shown(w.diffusion_steps) and _shown(w.gen_base) and _shown(w.minutes)
    assert w.minutes.value == 0  # 0 = the step counts
    assert w._gen_job_args()[1][3].minutes is None
    w.minutes.value = 2.5
    assert w._gen_job_args()[1][3].minutes == 2.5  # the job's GeneratorConfig carries the budget
    assert _shown(w.precision) and w._gen_job_args()[1][3].precision == "fp32"
    assert not _shown(w.patch) and not _shown(w.synthetic_ratio) and not _shown(w.finetune_btn)
    assert not _shown(w.keep_vae)  # only when starting from a generator
    w.target.value = "segmenter"
    assert not _shown(w.vae_steps) and _shown(w.patch)


def test_trains_a_generator_that_the_generate_widget_lists(make_napari_viewer, qtbot, tiny_gen_config, notes):
    from napari_cellgen.generate.store import load_generator

    viewer, w, gen_w = _setup(make_napari_viewer)
    w.name.value = "my-gen"
    w.slices.value = "0,2"
    w.precision.value = "bf16"  # Advanced › precision: bfloat16 for the generator too
    assert "my-gen" not in gen_w.generator.choices
    w.start()
    assert w.stop_btn.enabled and not w.start_btn.enabled and not w.target.enabled
    qtbot.waitUntil(lambda: w._worker is None, timeout=TIMEOUT)
    assert "finished" in w.status.value, w.status.value
    assert "my-gen" in gen_w.generator.choices
    assert w.progress.value == w.progress.max == 6
    assert len(w._history["loss"]) == 6 and w._history["step"] == sorted(w._history["step"])
    gen = load_generator("my-gen")
    assert gen.denoiser_card["training"]["mask_slices"] == [0, 2]  # only the slices asked for
    assert gen.denoiser_card["training"]["config"]["precision"] == "bf16"
    assert any("my-gen" in str(n.message) and "ready" in str(n.message) for n in notes)
    assert w.start_btn.enabled and not w.stop_btn.enabled


def test_without_labels_it_trains_an_unconditional_generator(make_napari_viewer, qtbot, tiny_gen_config):
    from napari_cellgen.generate.store import load_generator

    viewer, w, _ = _setup(make_napari_viewer, with_labels=False)
    w.name.value = "uncond"
    w.start()
    qtbot.waitUntil(lambda: w._worker is None, timeout=TIMEOUT)
    assert load_generator("uncond").denoiser_card["training"]["mask_slices"] == []


def test_stop_in_the_denoiser_stage_keeps_a_usable_generator(make_napari_viewer, qtbot, tiny_gen_config):
    from napari_cellgen.generate.store import load_generator

    viewer, w, gen_w = _setup(make_napari_viewer)
    w.vae_steps.value, w.diffusion_steps.value, w.name.value = 2, 100000, "stopped-gen"
    w.start()
    qtbot.waitUntil(lambda: w.progress.value >= 4, timeout=TIMEOUT)  # two denoiser steps done
    w.stop_btn.changed.emit(True)
    qtbot.waitUntil(lambda: w._worker is None, timeout=TIMEOUT)
    assert "stopped early" in w.status.value, w.status.value
    gen = load_generator("stopped-gen")
    assert 2 <= gen.denoiser_card["training"]["steps"] < 1000
    assert "stopped-gen" in gen_w.generator.choices


def test_stop_in_the_vae_stage_registers_nothing(make_napari_viewer, qtbot, tiny_gen_config, notes):
    from napari_cellgen.generate.store import list_generators

    viewer, w, _ = _setup(make_napari_viewer)
    w.vae_steps.value, w.name.value = 100000, "half"
    w.start()
    qtbot.waitUntil(lambda: w.progress.value >= 2, timeout=TIMEOUT)
    w.stop()
    qtbot.waitUntil(lambda: w._worker is None, timeout=TIMEOUT)
    assert "no usable generator" in w.status.value
    assert "half" not in list_generators()


def test_bad_input_is_refused_with_a_message(make_napari_viewer, qtbot, tiny_gen_config, notes):
    viewer, w, _ = _setup(make_napari_viewer)
    viewer.add_image(np.zeros((5, 64, 64), np.uint8), name="other")
    w.images.value = [viewer.layers["em"], viewer.layers["other"]]
    w.start()
    assert w._worker is None
    assert any("one image layer" in str(n.message) for n in notes)
    w.images.value = []
    w.start()
    assert w._worker is None and any("choose the image layer" in str(n.message) for n in notes)


def test_adapting_mito_gen_to_my_microscope_from_the_dock(make_napari_viewer, qtbot, tiny_gen_config, tmp_path,
                                                          monkeypatch):
    """Start from a generator, "adapt: to my microscope": a new generator whose images, generated from a
    mask drawn over my image, have my image's grey levels and pixel size."""
    import json

    from _generate_helpers import tiny_generator

    from napari_cellgen.generate.store import load_generator, user_generators_dir

    base = tiny_generator(user_generators_dir() / "base-gen")
    card = json.loads((base / "vae" / "card.json").read_text())
    card["pixel_size_nm"] = 5.0  # as mito-gen's card says
    (base / "vae" / "card.json").write_text(json.dumps(card))
    viewer, w, gen_w = _setup(make_napari_viewer)
    img, mask = disks(z=4, size=128, seed=3, radius=(6, 10), per_slice=4)
    dark = np.clip(200 - 0.6 * img.astype(np.float64) + np.random.default_rng(0).normal(0, 15, img.shape), 0, 255)
    mine = viewer.add_image(dark.astype(np.uint8), name="mine", scale=(10.0, 10.0, 10.0),
                            metadata={"pixel_size_nm": (10.0, 10.0, 10.0)})
    labels = viewer.add_labels(mask, name="mine mitochondria", scale=(10.0, 10.0, 10.0))
    w.images.value, w.labels.value = [mine], [labels]
    w.gen_base.reset_choices()
    w.gen_base.value = "base-gen"
    assert _shown(w.adapt) and w.adapt.value == "acquisition"
    assert not _shown(w.diffusion_steps) and not _shown(w.keep_vae)  # nothing to train
    w.slices.value, w.name.value = "1", "base-for-mine"
    w.start()
    qtbot.waitUntil(lambda: w._worker is None, timeout=TIMEOUT)
    assert "adapted to your microscope" in w.status.value, w.status.value
    gen = load_generator("base-for-mine")
    assert gen.acquisition["scale"] == 0.5 and gen.layout["slices"] == [1]

    drawn = viewer.add_labels(mask[2, :64, :64].astype(np.uint32), name="drawn", scale=(10.0, 10.0))
    gen_w.reset_choices()
    gen_w.generator.value = "base-for-mine"
    gen_w.labels.value = drawn
    gen_w.n.value, gen_w.steps.value = 1, 2
    gen_w.start()
    name = "generated (base-for-mine)"
    qtbot.waitUntil(lambda: f"{name} masks" in viewer.layers, timeout=TIMEOUT)
    out = viewer.layers[name]
    assert out.data.shape == (1, 64, 64)
    assert tuple(out.scale[-2:]) == (10.0, 10.0)  # the user's pixels, over the drawn mask
    assert abs(float(out.data.mean()) - float(dark.mean())) < 15  # my microscope's grey levels
