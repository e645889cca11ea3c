"""``cellgen train`` end to end on tiny TIFF stacks (a few steps of a 4-feature U-Net)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from _train_helpers import blob_stack

from napari_cellgen.cli import main
from napari_cellgen.models.store import list_models, load_model

TINY = ["--model", "scratch", "--base", "4", "--depth", "2", "--scale", "1", "--context", "0",
        "--patch", "32", "--batch", "2", "--threads", "1", "--quiet"]




@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLGEN_USER_DIR", str(tmp_path / "user"))
    img, mask = blob_stack()
    tifffile.imwrite(tmp_path / "img.tif", img, photometric="minisblack")
    tifffile.imwrite(tmp_path / "mask.tif", mask, photometric="minisblack")
    return tmp_path


def test_train_registers_and_prints_progress(files, capsys):
    out = files / "my-model"
    rc = main(["train", "--images", str(files / "img.tif"), "--masks", str(files / "mask.tif"),
               "--steps", "4", "--val-every", "2", "--slices", "0-3", "--val-fraction", "0.3", "-o", str(out), *TINY])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "step 2/4" in err and "val IoU" in err and "loss" in err
    assert "registered as 'my-model'" in err
    model, card = load_model(out)  # MODEL_DIR is usable as --model MODEL_DIR
    assert card["training"]["config"]["patch"] == 32 and card["training"]["patch_input_px"] == 32
    assert "my-model" in list_models()
    assert (out / "last" / "state.json").is_file()
    # the registered name and the folder both work for segmentation
    for model in ("my-model", str(out)):
        labels = files / "labels.tif"
        assert main(["segment", str(files / "img.tif"), "-o", str(labels), "--model", model,
                     "--quiet", "--device", "cpu"]) == 0
        assert tifffile.imread(labels).shape == (4, 64, 64)

    # fine-tune from the folder, then resume: the step count continues
    out2 = files / "ft"
    args = ["train", "--images", str(files / "img.tif"), "--masks", str(files / "mask.tif"),
            "--model", str(out), "--steps", "4", "--val-every", "2", "--patch", "32", "--batch", "2",
            "--threads", "1", "--quiet", "--name", "tuned", "-o", str(out2), "--precision", "bf16"]
    assert main(args) == 0
    card2 = json.loads((out2 / "card.json").read_text())
    assert card2["parent"] == "my-model" and card2["name"] == "tuned"
    assert card2["training"]["config"]["precision"] == "bf16"  # and a resume keeps training in it
    assert args[7:9] == ["--steps", "4"]
    assert main([*args[:8], "6", *args[9:], "--resume"]) == 0
    assert json.loads((out2 / "last" / "state.json").read_text())["step"] == 6


def test_scratch_model_records_the_files_pixel_size(files):
    """A model trained from scratch on a stack whose file gives its voxel size carries it on its card,
    so that ``segment`` can rescale other data to it (without it, "pixel size told" changed nothing)."""
    from napari_cellgen.commands.segment import write_stack
    from napari_cellgen.models.store import read_card

    img, mask = blob_stack()
    write_stack(files / "img40.tif", img, np.uint8, (40.0, 8.0, 8.0))
    out, plain = files / "with-ps", files / "no-ps"
    common = ["--masks", str(files / "mask.tif"), "--steps", "2", "--val-every", "2", "--no-register", *TINY]
    assert main(["train", "--images", str(files / "img40.tif"), "-o", str(out), *common]) == 0
    assert read_card(out)["pixel_size_nm"] == [40.0, 8.0, 8.0]
    assert main(["train", "--images", str(files / "img.tif"), "-o", str(plain), *common]) == 0
    assert "pixel_size_nm" not in read_card(plain)  # the file gives none: nothing is made up


def test_patch_is_converted_to_model_pixels(files):
    import argparse

    from napari_cellgen.commands.train import add_parser, build_config

    sub = argparse.ArgumentParser().add_subparsers()
    p = add_parser(sub)
    args = p.parse_args(["--images", "a", "--masks", "b", "-o", str(files / "m"), "--model", "scratch",
                         "--patch", "256", "--scale", "0.5", "--depth", "4"])
    cfg = build_config(args)
    assert cfg.patch == 128 and cfg.lr == 2e-3 and cfg.name == "m"


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"--masks": "short.tif"}, "must be pixel-aligned"),
        ({"--masks": "empty.tif"}, "no annotated slice"),
        ({"--masks": "missing.tif"}, "does not exist"),
        ({"--slices": "0-99"}, "outside the stack"),
        ({"--slices": "one"}, "cannot read slice list"),
        ({"--model": "no-such-model"}, "No model called"),
        ({"--steps": "0"}, "--steps must be at least 1"),
        ({"--masks": "probs.tif"}, "fractional values"),
        ({"--hard-examples": "0.7"}, "add up to at most 1"),
        ({"--ema": "1"}, "--ema must be in"),
    ],
)
def test_bad_input_exits_2_with_one_line(files, capsys, change, expected):
    img, mask = blob_stack()
    tifffile.imwrite(files / "short.tif", mask[:, :32], photometric="minisblack")
    tifffile.imwrite(files / "empty.tif", np.zeros_like(mask), photometric="minisblack")
    tifffile.imwrite(files / "probs.tif", (mask / 300).astype(np.float32), photometric="minisblack")
    opts = {"--images": "img.tif", "--masks": "mask.tif", "--steps": "2"}
    opts.update(change)
    argv = ["train", *TINY]
    for k, v in opts.items():
        argv += [k, str(files / v) if v.endswith(".tif") else v]
    argv += ["-o", str(files / "out")]  # a later --model overrides TINY's
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cellgen train: error:") and expected in err[0], err


def test_synthetic_set_is_mixed_in(files, capsys):
    img, mask = blob_stack(n=3, seed=7)
    syn = files / "synth"
    syn.mkdir()
    tifffile.imwrite(syn / "images.tif", img, photometric="minisblack")
    tifffile.imwrite(syn / "masks.tif", mask.astype(np.uint16), photometric="minisblack")
    out = files / "with-synth"
    rc = main(["train", "--images", str(files / "img.tif"), "--masks", str(files / "mask.tif"),
               "--steps", "2", "--synthetic", str(syn), "--synthetic-ratio", "0.5", "-o", str(out), *TINY])
    assert rc == 0, capsys.readouterr().err
    card = json.loads((out / "card.json").read_text())
    assert card["training"]["synthetic"]["pairs"] == 3 and card["training"]["synthetic"]["per_batch"] == 1
    assert main(["train", "--images", str(files / "img.tif"), "--masks", str(files / "mask.tif"),
                 "--synthetic", str(files / "nope"), "-o", str(out), *TINY]) == 2
