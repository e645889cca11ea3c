"""Fine-tuning on a few corrected slices learns the corrections and keeps the last weights."""

from __future__ import annotations

import numpy as np
import torch
from _train_helpers import correction_scene, train_disk_model

from napari_cellgen._progress import run
from napari_cellgen.models.store import load_model
from napari_cellgen.train.loop import corrections_config, train_model


def _prob(path, img, z):
    from napari_cellgen.segment.predict import predict_stack

    model, card = load_model(path)
    model.eval()
    prob = run(predict_stack(model, card, img, batch_size=4, tta=1))[z]
    return prob.astype(np.float32) / 255 if prob.dtype == np.uint8 else prob


def test_corrections_are_learned_and_the_last_weights_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLGEN_USER_DIR", str(tmp_path / "user"))
    torch.set_num_threads(1)
    torch.manual_seed(0)
    train_disk_model(tmp_path / "base")
    img, mask = correction_scene(0)
    p0 = _prob(tmp_path / "base", img, 1)
    assert p0[72:84, 10:22].mean() > 0.5 and p0[10:22, 72:84].mean() < 0.5  # the two mistakes to fix

    painted = mask.copy()
    painted[1, 8:24, 70:86] = 255  # paint the missed striped object; the square stays erased
    cfg = corrections_config(str(tmp_path / "base"), "ft", steps=120, patch_px=48, batch=8, lr=5e-3)
    cfg.threads = 1
    out = run(train_model([(img, painted, [1])], tmp_path / "ft", cfg))
    card = out["card"]
    assert card["training"]["val_regions"] == 0 and card["training"]["selection"] == "last"
    assert card["metrics"]["step"] == 120 and card["metrics"]["selection"] == "last"
    assert card["training"].get("corrected_pixels", 0) > 200  # the square and the stripes, found before step 1
    p1 = _prob(tmp_path / "ft", img, 1)
    assert p1[10:22, 72:84].mean() > 0.5, "the painted object is not found"
    assert p1[72:84, 10:22].mean() < 0.5, "the erased object came back"
    disks = (mask[1] > 0)
    assert (p1[disks] > 0.5).mean() > 0.8  # and it still finds the mitochondria it found before
