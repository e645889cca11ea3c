"""Fine-tuning on a few corrected slices learns the corrections and keeps the last weights."""

from __future__ import annotations

import numpy as np
import torch
from _train_helpers import blob_stack, correction_scene, train_disk_model

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


def test_cli_corrections_uses_the_docks_recipe(tmp_path, monkeypatch, capsys):
    import tifffile

    from napari_cellgen.cli import main
    from napari_cellgen.models.store import read_card

    monkeypatch.setenv("CELLGEN_USER_DIR", str(tmp_path / "user"))
    train_disk_model(tmp_path / "base")
    img, mask = correction_scene(0)
    tifffile.imwrite(tmp_path / "em.tif", img)
    tifffile.imwrite(tmp_path / "fixed.tif", mask)
    rc = main(["train", "--images", str(tmp_path / "em.tif"), "--masks", str(tmp_path / "fixed.tif"),
               "--model", str(tmp_path / "base"), "--corrections", "--slices", "1", "--steps", "3",
               "--patch", "48", "--threads", "1", "--quiet", "--no-register", "-o", str(tmp_path / "ft")])
    assert rc == 0, capsys.readouterr().err
    card = read_card(tmp_path / "ft")
    assert card["training"]["selection"] == "last" and card["training"]["config"]["emphasis"] > 0
    anchors = card["training"]["anchors"]  # the other labelled slices, if the model agreed with the fixes
    assert anchors["used"] == (anchors["start_iou_on_painted"] >= 0.8)
    assert not anchors["used"] or anchors["slices"] == [0, 2, 3]
    assert card["metrics"]["step"] == 3
    rc = main(["train", "--images", str(tmp_path / "em.tif"), "--masks", str(tmp_path / "fixed.tif"),
               "--model", str(tmp_path / "base"), "--corrections", "-o", str(tmp_path / "ft2")])
    assert rc == 2 and "--slices" in capsys.readouterr().err


def test_anchors_only_when_the_model_already_agreed(tmp_path, monkeypatch):
    from napari_cellgen.train.loop import correction_data

    monkeypatch.setenv("CELLGEN_USER_DIR", str(tmp_path / "user"))
    train_disk_model(tmp_path / "base")
    img, mask = blob_stack(4, 96, 1, radius=(6, 10), margin=14, blobs=3, contrast=110, noise=8)
    cfg = corrections_config(str(tmp_path / "base"), "ft", steps=2, patch_px=48)
    cfg.threads = 1
    pairs, anchors = correction_data(img, mask, [1])
    assert [zs for _, _, zs in anchors] == [[0, 2, 3]]
    card = run(train_model(pairs, tmp_path / "a", cfg, anchors=anchors))["card"]
    assert card["training"]["anchors"]["used"]  # the disks it knows: its own labels are kept elsewhere
    wrong = np.where(mask > 0, 0, 255).astype(np.uint8)  # corrections that contradict it everywhere
    pairs, anchors = correction_data(img, wrong, [1])
    card = run(train_model(pairs, tmp_path / "b", cfg, anchors=anchors))["card"]
    assert not card["training"]["anchors"]["used"] and "not kept" in card["training"]["anchors"]["why"]


def test_a_thin_missed_rim_counts_as_corrected(tmp_path, monkeypatch):
    from napari_cellgen.train.data import build_regions
    from napari_cellgen.train.evaluate import hard_pixels

    monkeypatch.setenv("CELLGEN_USER_DIR", str(tmp_path / "user"))
    train_disk_model(tmp_path / "base")
    model, card = load_model(tmp_path / "base")
    img, mask = blob_stack(4, 96, 1, radius=(6, 10), margin=14, blobs=3, contrast=110, noise=8)
    painted = mask.copy()
    painted[1, 40:42, 4:60] = 255  # a 2-px rim the model does not see: what a user paints along an edge
    regions = build_regions(img, painted, [1], card)
    rim = np.zeros(painted.shape[1:], bool)
    rim[40:42, 4:60] = mask[1, 40:42, 4:60] == 0
    eroded, every = hard_pixels(model, regions, card)[0], hard_pixels(model, regions, card, erode=False)[0]
    assert every[rim].mean() > 0.8 and eroded[rim].mean() < 0.2  # erosion would drop it; corrections keep it


def test_the_background_band_around_objects_counts_more_where_nothing_was_painted():
    from types import SimpleNamespace

    from napari_cellgen.train.loop import EDGE_BAND, _emphasis_maps

    mask = np.zeros((40, 40), np.float32)
    mask[10:20, 10:20] = 1  # an object the user left as it was
    painted = np.zeros((40, 40), bool)
    painted[30:34, 30:34] = True  # a correction (here: an erased false object)
    region = SimpleNamespace(mask=mask)
    cfg = SimpleNamespace(emphasis=8.0, edge_weight=8.0)
    m = _emphasis_maps([region], [painted], cfg)[0]
    assert (m[painted] == 1).all()  # the corrections count 1 + emphasis
    assert m[10:20, 10:20].max() == 0  # inside the object: no extra weight
    band = m[10 - EDGE_BAND:20 + EDGE_BAND, 10 - EDGE_BAND:20 + EDGE_BAND].copy()
    band[EDGE_BAND:-EDGE_BAND, EDGE_BAND:-EDGE_BAND] = 1.0
    assert np.allclose(band[1:-1, 1:-1], 1.0)  # just outside: 1 + edge_weight (corners lie farther)
    assert m[0:5, 25:40].max() == 0 and m[25:29, 0:5].max() == 0  # far background: no extra weight
    anchors = _emphasis_maps([region], None, SimpleNamespace(emphasis=8.0, edge_weight=4.0))[0]
    assert anchors.max() == 0.5 and not anchors[painted].any()  # anchors: the band only, 1 + 4
    assert not _emphasis_maps([region], None, SimpleNamespace(emphasis=8.0, edge_weight=0.0))[0].any()
