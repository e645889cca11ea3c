"""The shipped default model loads from safetensors and segments the sample crop."""

import numpy as np
import pytest

from napari_cellgen._sample_data import sample_paths
from napari_cellgen.io import read_stack
from napari_cellgen.models.store import DEFAULT_MODEL, bundled_dir, list_models, load_model
from napari_cellgen.segment.pipeline import SegmentOptions, segment


def test_shipped_model_is_bundled_small_and_described():
    folder = bundled_dir() / DEFAULT_MODEL
    assert (folder / "model.safetensors").stat().st_size <= 10 * 1024**2
    assert DEFAULT_MODEL in list_models()
    model, card = load_model(DEFAULT_MODEL)
    for key in ("architecture", "normalization", "tile", "scale", "training", "metrics", "date"):
        assert key in card, key
    assert card["metrics"]["cv_iou_mean"] > 0.5


def test_shipped_card_holds_what_code_wrote_and_points_at_its_measurements():
    """Hand-written measurements live in benchmarks/results/, which name the weights by sha256."""
    import json
    from pathlib import Path

    from napari_cellgen.models.store import read_card

    card = read_card(bundled_dir() / DEFAULT_MODEL)
    # what benchmarks/ship_segmenter.py writes: the recipe's cross-validation, the schedule's last weights
    assert set(card["metrics"]) == {"cv_iou_mean", "cv_iou_std", "cv_folds", "step", "selection"}
    assert not {"tile_note", "selection_note"} & set(card)
    assert card["training"]["train_slices_list"] == "0-164" and card["training"]["val_slices_list"] == "none"
    repo = Path(__file__).resolve().parents[1]
    assert card["results"]
    for rel in card["results"]:
        assert (repo / rel).is_file(), rel
    notes = json.loads((repo / card["results"][0]).read_text())
    assert notes["model"]["weights_sha256"] == card["weights_sha256"]
    cv = json.loads((repo / card["results"][1]).read_text())
    ious = [f["iou"] for f in cv["folds"]]
    assert card["metrics"]["cv_iou_mean"] == notes["cv"]["iou_mean"] == pytest.approx(np.mean(ious))
    assert len(card["metrics"]["cv_folds"]) == len(ious) >= 2


def test_shipped_model_segments_the_sample_well_above_chance():
    img_path, gt_path = sample_paths()
    image, meta = read_stack(img_path)
    gt = np.asarray(read_stack(gt_path)[0]) > 0
    image = np.asarray(image)[:3]  # three slices keep the test quick
    gt = gt[:3]
    res = segment(image, SegmentOptions(model=DEFAULT_MODEL, device="cpu"), pixel_size=meta.get("pixel_size_nm"))
    pred = res.labels > 0
    iou = np.logical_and(pred, gt).sum() / np.logical_or(pred, gt).sum()
    chance = gt.mean()  # IoU of predicting everything foreground
    assert iou > 0.6 > chance, iou
    assert res.n_objects >= 1 and len(res.table["label"]) == res.n_objects


def test_cpu_model_is_channels_last_and_matches_the_plain_one():
    import pickle

    import torch

    from napari_cellgen.models.unet import fuse_batchnorm
    from napari_cellgen.segment.pipeline import get_model
    from napari_cellgen.segment.predict import make_forward

    fast, _ = get_model(DEFAULT_MODEL, "cpu")
    assert fast.head.weight.is_contiguous(memory_format=torch.channels_last)
    plain, card = load_model(DEFAULT_MODEL)
    plain = fuse_batchnorm(plain)
    c = card["architecture"]["in_channels"]
    rng = np.random.default_rng(0)
    for shape in ((1, c, 16, 16), (2, c, 48, 80), (1, c, 160, 96)):
        x = rng.random(shape, dtype=np.float32)
        with torch.inference_mode():
            expect = torch.sigmoid(plain(torch.from_numpy(x)))[:, 0].numpy()
        np.testing.assert_allclose(make_forward(fast)(x), expect, atol=1e-5)
    pickle.dumps(fast)  # the blockwise path ships it to dask workers
