"""The Qt-free training core: tiny U-Nets on tiny synthetic data, a few steps each."""

from __future__ import annotations

import json
import pickle
import threading

import numpy as np
import pytest
import torch
from _train_helpers import blob_stack

from napari_cellgen._progress import run
from napari_cellgen.models.store import list_models, load_model, load_tensors
from napari_cellgen.models.unet import UNet
from napari_cellgen.train.checkpoint import load_training_state, save_training_state
from napari_cellgen.train.data import DataError, as_mask, parse_slices
from napari_cellgen.train.loop import (
    TrainConfig,
    evaluate,
    patch_at_model_scale,
    prepare_regions,
    train_model,
    train_segmenter,
)


def tiny(**kw) -> TrainConfig:
    base = dict(steps=6, scale=1.0, context=0, base=4, depth=2, patch=32, batch=2, val_every=2,
                tile=64, overlap=16, lr=1e-2, elastic_p=0.0, seed=0, threads=1, val_fraction=0.34)
    base.update(kw)
    return TrainConfig(**base)


def synthetic(n: int = 3, size: int = 64, seed: int = 0, blobs: int = 4):
    """Dark round 'mitochondria' on a bright noisy background; mask 0/255."""
    return blob_stack(n, size, seed, radius=(4, 9), margin=8, blobs=blobs, contrast=110, noise=12)


@pytest.fixture(autouse=True)
def _user_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLGEN_USER_DIR", str(tmp_path / "user"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest and immune to a busy machine
    yield
    torch.set_num_threads(threads)


def losses_of(gen):
    out = []
    run(gen, lambda p: out.append(p.info["loss"]) if p.stage == "train" else None)
    return out


def test_tiny_unet_loss_falls(tmp_path):
    img, mask = synthetic()
    cfg = tiny(steps=60, val_every=60, batch=4)
    threads = torch.get_num_threads()
    losses = losses_of(train_segmenter([(img, mask, None)], tmp_path / "m", cfg))
    assert torch.get_num_threads() == threads  # cfg.threads is restored afterwards
    assert len(losses) == 60
    assert np.mean(losses[-10:]) < 0.75 * np.mean(losses[:5]), losses
    model, card = load_model(tmp_path / "m")
    assert card["architecture"]["base"] == 4
    # the card's number is what the kept weights score on the held-out slice, and they learned:
    # calling every pixel foreground scores 0.13 there, this run 0.85
    _, val = prepare_regions([(img, mask, None)], card, None, cfg.val_fraction)
    assert len(val) == 1 and card["metrics"]["val_iou"] == pytest.approx(evaluate(model, val, card))
    assert card["metrics"]["val_iou"] > 0.6


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="no native bfloat16 on this CPU")
def test_bfloat16_training_learns_as_float32_does(tmp_path):
    img, mask = synthetic()
    cfg = tiny(steps=60, val_every=60, batch=4, precision="bf16")
    losses = losses_of(train_segmenter([(img, mask, None)], tmp_path / "m", cfg))
    assert np.mean(losses[-10:]) < 0.75 * np.mean(losses[:5]), losses
    model, card = load_model(tmp_path / "m")
    assert card["training"]["config"]["precision"] == "bf16"
    assert next(model.parameters()).dtype == torch.float32  # float32 weights: inference is unchanged
    assert card["metrics"]["val_iou"] > 0.6  # fp32, same run: 0.85 (test_tiny_unet_loss_falls)
    with pytest.raises(ValueError, match="--precision must be one of"):
        tiny(precision="fp16").validate()


def test_batch_dice_does_not_let_an_empty_patch_dominate():
    from napari_cellgen.train.loop import _loss

    target = torch.zeros(2, 1, 16, 16)
    target[0, :, 4:12, 4:12] = 1.0  # patch 0 has a mitochondrion, patch 1 (a look-alike) has none
    logits = torch.where(target > 0, 4.0, -4.0)
    logits[1, :, 7:9, 7:9] = 0.0  # a faint false positive on the empty patch
    per_patch, batch = _loss(logits, target, "sample"), _loss(logits, target, "batch")
    # per patch, the empty patch's Dice is ~0.5 for 4 half-confident pixels; over the batch it is a small error
    assert float(per_patch) > float(batch) + 0.2
    with pytest.raises(ValueError, match="dice must be one of"):
        _loss(logits, target, "pixel")


def test_batch_dice_config_trains_and_is_recorded(tmp_path):
    img, mask = synthetic()
    losses = losses_of(train_segmenter([(img, mask, None)], tmp_path / "m", tiny(dice="batch")))
    per_patch = losses_of(train_segmenter([(img, mask, None)], tmp_path / "s", tiny(dice="sample")))
    # same seed, same first batch and weights: the first losses differ only if the batch Dice is used
    assert len(losses) == 6 and losses[0] != pytest.approx(per_patch[0], rel=1e-3)
    _, card = load_model(tmp_path / "m")
    assert card["training"]["config"]["dice"] == "batch"


def test_continue_at_another_scale(tmp_path):
    img, mask = synthetic(size=96)
    run(train_segmenter([(img, mask, None)], tmp_path / "a", tiny(steps=2)))
    cfg = tiny(steps=2, init=str(tmp_path / "a"), rescale=0.5, tile=32)
    run(train_segmenter([(img, mask, None)], tmp_path / "b", cfg))
    _, card = load_model(tmp_path / "b")
    assert (card["scale"], card["tile"]) == (0.5, 32) and card["parent"]
    with pytest.raises(ValueError, match="rescale"):
        run(train_segmenter([(img, mask, None)], tmp_path / "c", tiny(init=str(tmp_path / "a"), rescale=3.0)))


def test_widen_context_keeps_the_function_and_only_grows():
    from napari_cellgen.models.unet import widen_context

    torch.manual_seed(0)
    model = UNet(in_channels=3, base=4, depth=2).eval()
    x = torch.randn(2, 7, 32, 32)
    with torch.no_grad():
        before = model(x[:, 2:5])
        widen_context(model, 1, 3)
        after = model(x)
    assert model.config["in_channels"] == 7 and model.down[0][0].in_channels == 7
    torch.testing.assert_close(after, before)
    with pytest.raises(ValueError, match="only grow"):
        widen_context(model, 3, 1)
    with pytest.raises(ValueError, match="takes 7 channels"):
        widen_context(model, 1, 2)


def test_continue_with_more_context(tmp_path):
    img, mask = synthetic(n=5)
    run(train_segmenter([(img, mask, None)], tmp_path / "a", tiny(steps=2, context=1)))
    run(train_segmenter([(img, mask, None)], tmp_path / "b", tiny(steps=2, init=str(tmp_path / "a"), recontext=2)))
    model, card = load_model(tmp_path / "b")
    assert card["context"] == 2 and card["architecture"]["in_channels"] == 5
    assert model.down[0][0].in_channels == 5
    with pytest.raises(DataError, match="context 0"):
        run(train_segmenter([(img, mask, None)], tmp_path / "c", tiny(init=str(tmp_path / "b"), recontext=0)))


def test_checkpoint_round_trip_without_pickle(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = UNet(1, base=4, depth=2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(2, 1, 32, 32)
    for _ in range(2):
        opt.zero_grad()
        model(x).mean().backward()
        opt.step()
    state = {"step": 2, "best": 0.5, "history": [{"step": 2, "val_iou": 0.5}]}
    save_training_state(tmp_path / "ck", model, opt, {"architecture": model.config}, state)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        "card.json", "model.safetensors", "optimizer.safetensors", "state.json"]

    def no_pickle(*a, **k):
        raise AssertionError("a checkpoint must never be unpickled")

    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(torch, "load", no_pickle)
    model2 = UNet(1, base=4, depth=2)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-3)
    st = load_training_state(tmp_path / "ck", model2, opt2)
    assert st["step"] == 2 and st["history"] == state["history"]
    for a, b in zip(model.state_dict().values(), model2.state_dict().values(), strict=False):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys()
    for k in s1:
        for name in s1[k]:
            assert torch.equal(torch.as_tensor(s1[k][name]), torch.as_tensor(s2[k][name]))
    model3, _ = load_model(tmp_path / "ck")  # the same folder is also a loadable model
    assert torch.equal(next(model3.parameters()), next(model.parameters()))


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_continues_and_matches_an_uninterrupted_run(tmp_path, ema):
    img, mask = synthetic()
    pairs = [(img, mask, None)]
    cfg = tiny(steps=8, val_every=4, ema=ema)
    run(train_segmenter(pairs, tmp_path / "a", cfg))

    stop = threading.Event()
    steps = []
    gen = train_model(pairs, tmp_path / "b", cfg, stop=stop.is_set)

    def cb(p):
        steps.append(p.done)
        if p.done == 3:
            stop.set()

    result = run(gen, cb)
    assert result["stopped"] and result["step"] == 3
    assert json.loads((tmp_path / "b" / "last" / "state.json").read_text())["step"] == 3
    resumed = []
    run(train_segmenter(pairs, tmp_path / "b", cfg, resume=True),
        lambda p: resumed.append(p.done) if p.stage == "train" else None)
    assert resumed == [4, 5, 6, 7, 8]
    wa = load_tensors(tmp_path / "a" / "last" / "model.safetensors")
    wb = load_tensors(tmp_path / "b" / "last" / "model.safetensors")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)
    assert (tmp_path / "a" / "last" / "ema.safetensors").exists() == bool(ema)
    if ema:  # the average survives the interruption too, and it is what was validated and kept
        ea = load_tensors(tmp_path / "a" / "last" / "ema.safetensors")
        eb = load_tensors(tmp_path / "b" / "last" / "ema.safetensors")
        for k in ea:
            torch.testing.assert_close(ea[k], eb[k], rtol=1e-5, atol=1e-6)
        assert any(not torch.equal(ea[k], wa[k]) for k in ea if ea[k].is_floating_point())
        run(train_segmenter(pairs, tmp_path / "c", tiny(steps=4, val_every=4, ema=ema)))
        best = load_tensors(tmp_path / "c" / "model.safetensors")  # validated once, at the end
        ec = load_tensors(tmp_path / "c" / "last" / "ema.safetensors")
        assert all(torch.equal(best[k], v) for k, v in ec.items())


def test_stop_leaves_a_valid_best_checkpoint(tmp_path):
    img, mask = synthetic()
    gen = train_segmenter([(img, mask, None)], tmp_path / "m", tiny(steps=50, val_every=1000))
    for p in gen:
        if p.done == 3:
            break
    gen.close()  # what Stop does
    model, card = load_model(tmp_path / "m")
    assert card["metrics"]["step"] == 3
    # valid: the kept weights are the step-3 weights (as in last/), and the card's IoU is theirs
    kept = load_tensors(tmp_path / "m" / "model.safetensors")
    last = load_tensors(tmp_path / "m" / "last" / "model.safetensors")
    assert kept.keys() == last.keys() and all(torch.equal(kept[k], last[k]) for k in kept)
    _, val = prepare_regions([(img, mask, None)], card, None, 0.34)
    assert card["metrics"]["val_iou"] == pytest.approx(evaluate(model, val, card))


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_export_last_writes_the_unselected_final_weights(tmp_path, ema):
    from napari_cellgen.train.checkpoint import export_last

    img, mask = synthetic()
    run(train_segmenter([(img, mask, None)], tmp_path / "m", tiny(steps=4, val_every=2, ema=ema)))
    final = export_last(tmp_path / "m", tmp_path / "final")
    model, card = load_model(final)
    state = json.loads((tmp_path / "m" / "last" / "state.json").read_text())
    assert card["metrics"]["step"] == 4 and card["metrics"]["val_iou"] == state["history"][-1]["val_iou"]
    assert ("EMA" in card["metrics"]["selection"]) == bool(ema)
    name = "ema.safetensors" if ema else "model.safetensors"
    expected = load_tensors(tmp_path / "m" / "last" / name)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, expected[k])
    with pytest.raises(FileNotFoundError, match="no training state"):
        export_last(tmp_path / "nothing", tmp_path / "x")


def test_train_model_registers_the_result(tmp_path):
    img, mask = synthetic()
    result = run(train_model([(img, mask, None)], tmp_path / "m", tiny(steps=3), register_as="my model"))
    assert result["registered"].name == "my-model"
    assert "my-model" in list_models()
    _, card = load_model("my-model")
    assert card["name"] == "my-model" and card["architecture"]["base"] == 4


def test_unannotated_slices_are_not_background(tmp_path):
    img, mask = synthetic(n=5, seed=1)
    partial = mask.copy()
    partial[2:] = 0  # slices 2-4 show mitochondria but nobody painted them
    cfg = tiny(steps=2, val_fraction=0.5)
    card = run(train_segmenter([(img, partial, None)], tmp_path / "m", cfg))
    used = {tuple(s) for s in card["training"]["slices"]["train"] + card["training"]["slices"]["val"]}
    assert used == {(0, 0), (0, 1)}, used
    # and all training foreground comes from annotated slices: none of it is "learned away"
    train, val = prepare_regions([(img, partial, None)], {"scale": 1.0, "context": 0}, None, 0.5)
    assert sorted(r.z for r in train + val) == [0, 1]
    # slices passed explicitly are taken as annotated, even if empty (= background)
    train, val = prepare_regions([(img, partial, [0, 1, 2])], {"scale": 1.0, "context": 0}, None, 0.34)
    assert sorted(r.z for r in train + val) == [0, 1, 2]


def test_instance_ids_and_0_1_masks_are_foreground(tmp_path):
    img, mask = synthetic(n=2)
    ids = (mask > 0).astype(np.int32) * np.arange(1, 65)[None, None, :]  # many instance ids
    assert np.array_equal(as_mask(ids), mask > 0)
    assert np.array_equal(as_mask((mask > 0).astype(np.uint8)), mask > 0)
    assert np.array_equal(as_mask((mask > 0).astype(np.float32) * 7), mask > 0)
    card = run(train_segmenter([(img, ids, None)], tmp_path / "m", tiny(steps=1)))
    assert card["training"]["train_slices"] >= 1


def _first_error(pairs, tmp_path):
    with pytest.raises(DataError) as err:
        run(train_segmenter(pairs, tmp_path / "m", tiny(steps=1)))
    return str(err.value)


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda i, m: (i, m[:, :32]), "must match"),
        (lambda i, m: (i, np.zeros_like(m)), "no annotated slice"),
        (lambda i, m: (i, m.astype(np.float32) / 300), "fractional"),
        (lambda i, m: (i, m.astype(np.int16) - 1), "negative"),
        (lambda i, m: (i.astype(str), m), "must be numeric"),
        (lambda i, m: (i, m.astype(object)), "labels/mask"),
        (lambda i, m: (i[0, None, None], m[0, None, None]), "2D images or ZYX"),
    ],
    ids=["shape", "empty", "fractional", "negative", "text-image", "object-mask", "4d"],
)
def test_bad_inputs_give_clear_errors(tmp_path, make, expected):
    img, mask = synthetic(n=2)
    image, m = make(img, mask)
    assert expected in _first_error([(image, m, None)], tmp_path)


def test_empty_mask_on_given_slices(tmp_path):
    img, mask = synthetic(n=2)
    assert "empty" in _first_error([(img, np.zeros_like(mask), [0, 1])], tmp_path)


def test_parse_slices():
    assert parse_slices("0-3,7", 10) == [0, 1, 2, 3, 7]
    assert parse_slices("", 3) == [0, 1, 2]
    with pytest.raises(DataError, match="outside"):
        parse_slices("0-20", 10)
    with pytest.raises(DataError, match="ranges"):
        parse_slices("a-b", 10)


def test_patch_at_model_scale():
    assert patch_at_model_scale(256, 0.5, 4) == 128
    assert patch_at_model_scale(100, 0.5, 4) == 48
    assert patch_at_model_scale(8, 0.5, 4) == 16
    with pytest.raises(DataError):
        patch_at_model_scale(0, 1.0, 2)


def test_synthetic_pairs_are_mixed_in_but_never_validated(tmp_path):
    img, mask = synthetic(n=3)
    syn_img, syn_mask = synthetic(n=4, seed=5)
    card = run(train_segmenter([(img, mask, None)], tmp_path / "m", tiny(steps=3, synthetic_ratio=0.5),
                               synthetic=(syn_img, syn_mask.astype(np.uint16))))
    assert card["training"]["synthetic"] == {"pairs": 4, "per_batch": 1, "ratio": 0.5}
    assert {p for p, _ in card["training"]["slices"]["val"]} == {0}  # real data only
    with pytest.raises(DataError, match="one shape"):
        run(train_segmenter([(img, mask, None)], tmp_path / "m2", tiny(steps=1, synthetic_ratio=1.0),
                            synthetic=(syn_img, syn_mask[:, :10])))


def test_hard_examples_centre_patches_on_the_models_mistakes():
    from napari_cellgen.train.data import PatchSampler, Region

    planes = np.zeros((1, 64, 64), np.float32)
    planes[0, 40, 50] = 1.0  # a marker where the model will be "wrong"
    region = Region(planes, np.zeros((64, 64), np.float32))
    sampler = PatchSampler([region], patch=16, fg_prob=0.0, seed=0, hard_prob=1.0)
    x, _ = sampler.sample(8)
    assert (x.sum((1, 2, 3)) == 0).sum() >= 6  # no hard pixels yet: random patches, mostly without it
    errors = np.zeros((64, 64), bool)
    errors[40, 50] = True
    assert sampler.set_hard([errors]) == 1
    x, _ = sampler.sample(8)
    assert np.all(x.sum((1, 2, 3)) == 1.0)  # every patch now contains the hard pixel
    with pytest.raises(DataError, match="add up to at most 1"):
        PatchSampler([region], patch=16, fg_prob=0.8, hard_prob=0.3)


def test_hard_pixels_skip_edge_slivers_but_keep_false_objects():
    from napari_cellgen.train.data import Region
    from napari_cellgen.train.loop import hard_pixels

    class Fixed(torch.nn.Module):  # predicts a fixed map: the GT disk shifted by one pixel plus a false disk
        def __init__(self, logits):
            super().__init__()
            self.logits = logits

        def forward(self, x):
            return self.logits[None, None].expand(x.shape[0], 1, -1, -1)

    yy, xx = np.mgrid[:64, :64]
    gt = ((yy - 20) ** 2 + (xx - 20) ** 2 <= 64).astype(np.float32)
    pred = ((yy - 21) ** 2 + (xx - 20) ** 2 <= 64) | ((yy - 45) ** 2 + (xx - 45) ** 2 <= 36)
    model = Fixed(torch.from_numpy(np.where(pred, 10.0, -10.0).astype(np.float32)))
    card = {"architecture": {"depth": 0}, "tile": 64, "overlap": 0}
    (hard,) = hard_pixels(model, [Region(np.zeros((1, 64, 64), np.float32), gt)], card)
    assert hard[45, 45] and hard[:, 30:].sum() > 80  # the false object is hard
    assert not hard[:, :32].any()  # a one-pixel shift of the outline is not


def test_training_with_hard_examples_mines_again_and_reports_them(tmp_path):
    img, mask = synthetic()
    stages = []
    card = run(train_segmenter([(img, mask, None)], tmp_path / "m", tiny(steps=5, hard_prob=0.5, mine_every=2)),
               lambda p: stages.append((p.stage, p.done, (p.info or {}).get("hard_pixels"))))
    assert [d for s, d, _ in stages if s == "find hard examples"] == [0, 2, 4]
    assert all(h is not None for s, _, h in stages if s == "train")
    assert card["training"]["config"]["hard_prob"] == 0.5
