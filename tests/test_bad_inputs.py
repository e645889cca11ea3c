"""The bad-input matrix: every command over bad options, inputs, model cards and outputs.

Each case must end with exit code 2, exactly one line on stderr, no traceback, and every file of
the working folder (the inputs and earlier outputs) byte-identical afterwards, with nothing added:
no half-written output, no temporary file. Every case fails before any model work.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_cellgen import cli

TINY = ["--model", "scratch", "--base", "4", "--depth", "2", "--scale", "1", "--context", "0",
        "--patch", "32", "--batch", "2", "--threads", "1", "--quiet"]


# --------------------------------------------------------------------------- tiny model, generator, data
@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A tiny segmentation model and a tiny generator (untrained: only their files matter here)."""
    from napari_cellgen.generate.store import save_layout, save_part
    from napari_cellgen.models.denoiser import MaskDenoiser
    from napari_cellgen.models.store import save_model
    from napari_cellgen.models.unet import UNet
    from napari_cellgen.models.vae import ConvVAE

    root = tmp_path_factory.mktemp("parts")
    torch.manual_seed(0)
    card = {"context": 1, "scale": 0.5, "tile": 32, "overlap": 8,
            "normalization": {"kind": "percentile", "low": 1.0, "high": 99.0}}
    save_model(root / "model", UNet(3, 1, base=2, depth=2), card)
    vae = ConvVAE(1, (8, 16), latent_channels=4, blocks=0, stem=8)
    den = MaskDenoiser(latent_channels=4, factor=vae.divisor, block_out_channels=(32, 32), attention_levels=(),
                       norm_num_groups=8, attention_head_dim=8)
    save_part(root / "gen" / "vae", vae, {"kind": "vae", "latent_scale": 1.0, "latent_shift": 0.0,
                                          "noise_std": 0.0, "tile": 32, "scale": 1.0})
    save_part(root / "gen" / "denoiser", den, {"kind": "denoiser", "tile": 32, "scale": 1.0, "name": "tinygen"})
    save_layout(root / "gen", {})
    return root


def _checkpoint(folder: Path, base: int) -> None:
    from napari_cellgen.models.unet import UNet
    from napari_cellgen.train.checkpoint import save_training_state

    model = UNet(1, 1, base=base, depth=2)
    opt = torch.optim.AdamW(model.parameters())
    save_training_state(folder, model, opt, {"context": 0, "scale": 1.0, "tile": 32}, {"step": 1, "best": 0.5,
                                                                                     "history": []})


@pytest.fixture
def w(tmp_path, parts, monkeypatch):
    """The working folder: inputs, an earlier output, model and generator copies; the cwd."""
    work = tmp_path / "work"
    work.mkdir()
    user = Path(os.environ["CELLGEN_USER_DIR"])
    shutil.copytree(parts / "model", user / "models" / "tiny")
    shutil.copytree(parts / "gen", user / "generators" / "tinygen")
    shutil.copytree(parts / "model", work / "model")
    shutil.copytree(parts / "gen", work / "gen")
    rng = np.random.default_rng(0)
    em = rng.integers(0, 255, (3, 64, 64), dtype=np.uint8)
    tifffile.imwrite(work / "em.tif", em, photometric="minisblack")
    tifffile.imwrite(work / "mask.tif", (em > 128).astype(np.uint8), photometric="minisblack")
    tifffile.imwrite(work / "m32.tif", np.ones((2, 32, 32), np.uint8), photometric="minisblack")
    tifffile.imwrite(work / "neg32.tif", -np.ones((2, 32, 32), np.int16), photometric="minisblack")
    tifffile.imwrite(work / "m30.tif", np.ones((2, 30, 30), np.uint8), photometric="minisblack")
    tifffile.imwrite(work / "labels.tif", np.ones((3, 64, 64), np.uint16), photometric="minisblack")  # earlier
    (work / "truncated.tif").write_bytes((work / "em.tif").read_bytes()[:300])
    (work / "notes.txt").write_text("not an image")
    (work / "thing.zarr").write_text("a file, not a zarr")
    for name in ("emptydir", "ro", "slices", "run"):
        (work / name).mkdir()
    for z in range(3):
        tifffile.imwrite(work / "slices" / f"s{z}.tif", em[z], photometric="minisblack")
    monkeypatch.chdir(work)
    return work


def _card(path: Path, **change) -> None:
    card = json.loads(path.read_text())
    for key, value in change.items():
        if value is _DELETE:
            card.pop(key, None)
        else:
            card[key] = value
    path.write_text(json.dumps(card))


_DELETE = object()


def setup(w: Path, what: str, monkeypatch) -> None:
    """The per-case changes to the working folder (made before it is fingerprinted)."""
    card, gvae, gden = w / "model" / "card.json", w / "gen" / "vae" / "card.json", w / "gen" / "denoiser" / "card.json"
    if what == "symlink":
        (w / "link.tif").symlink_to(w / "em.tif")
    elif what == "unwritable":
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, m, *a, **k: False if Path(p) == w / "ro" else real(p, m, *a, **k))
    elif what == "companion-dir":
        (w / "gen_masks.tif").mkdir()
    elif what == "mixed-last":
        _checkpoint(w / "run" / "last", 4)
        from napari_cellgen.models.store import save_tensors
        from napari_cellgen.models.unet import UNet

        save_tensors(w / "run" / "last" / "model.safetensors", UNet(1, 1, base=4, depth=2).state_dict())
    elif what == "other-arch-last":
        _checkpoint(w / "run" / "last", 8)
    elif what == "card-json":
        card.write_text("{not json")
    elif what == "card-list":
        card.write_text("[]")
    elif what == "card-sha":
        _card(card, weights_sha256="0" * 64)
    elif what == "weights-garbage":
        (w / "model" / "model.safetensors").write_bytes(b"not a tensor file")
        _card(card, weights_sha256=_DELETE)
    elif what == "card-no-arch":
        _card(card, architecture=_DELETE)
    elif what == "card-depth":
        arch = json.loads(card.read_text())["architecture"]
        _card(card, architecture={**arch, "depth": 0})
    elif what.startswith("card-"):  # card-KEY=JSON
        key, value = what[5:].split("=", 1)
        _card(card, **{key: json.loads(value)})
    elif what.startswith("gvae-"):
        key, value = what[5:].split("=", 1)
        _card(gvae, **{key: json.loads(value)})
    elif what.startswith("gden-"):
        key, value = what[5:].split("=", 1)
        _card(gden, **{key: json.loads(value)})
    elif what == "gen-no-denoiser":
        shutil.rmtree(w / "gen" / "denoiser")
    elif what == "gen-json":
        gvae.write_text("{")
    elif what == "gen-sha":
        _card(gden, weights_sha256="0" * 64)
    elif what:
        raise AssertionError(what)


def _case(cid, argv, what=""):
    return pytest.param(argv, what, id=cid)


SEG = ["segment", "{w}/em.tif", "-o", "{w}/out.tif", "--model", "tiny", "--quiet"]
SEGM = ["segment", "{w}/em.tif", "-o", "{w}/out.tif", "--model", "{w}/model", "--quiet"]
TRAIN = ["train", "--images", "{w}/em.tif", "--masks", "{w}/mask.tif", "--steps", "2", *TINY]
SAMPLE = ["sample", "-o", "{w}/gen.tif", "--generator", "tinygen", "--steps", "2", "--quiet"]
SYNTH = ["synth", "-o", "{w}/syn", "--n", "2", "--generator", "tinygen", "--steps", "2", "--quiet"]
TGEN = ["train-generator", "--images", "{w}/em.tif", "--quiet", "--vae-steps", "1", "--diffusion-steps", "1"]
DEMO = ["demo", "--headless"]

CASES = [
    # ---- segment: options
    *[_case(f"segment-{'-'.join(o).strip('-')}", [*SEG, *o]) for o in (
        ["--batch", "-1"], ["--batch", "0"], ["--batch", "abc"], ["--threshold", "nan"],
        ["--threshold", "2"], ["--tile", "0"], ["--tile", "-64"], ["--overlap", "-1"],
        ["--tile", "32", "--overlap", "32"],
        ["--min-size", "-1"], ["--workers", "0"], ["--workers", "-1"], ["--workers", "1", "--block-z", "0"],
        ["--views", "3"], ["--device", "tpu"], ["--scheduler", "my-cluster"])],
    # ---- segment: inputs
    _case("segment-missing-input", ["segment", "{w}/missing.tif", "-o", "{w}/out.tif", "--model", "tiny"]),
    _case("segment-text-input", ["segment", "{w}/notes.txt", "-o", "{w}/out.tif", "--model", "tiny"]),
    _case("segment-empty-folder", ["segment", "{w}/emptydir", "-o", "{w}/out.tif", "--model", "tiny"]),
    _case("segment-truncated", ["segment", "{w}/truncated.tif", "-o", "{w}/out.tif", "--model", "tiny"]),
    # ---- segment: model cards
    *[_case(f"card-{c}", SEGM, f"card-{c}") for c in (
        "scale=0", "scale=NaN", "scale=2", "tile=0", "tile=30", "context=50", "context=-1", "overlap=-1",
        "overlap=32", "normalization={\"low\": 99, \"high\": 1}", "tile=\"big\"")],
    *[_case(c, SEGM, c) for c in ("card-json", "card-list", "card-sha", "weights-garbage", "card-no-arch",
                                  "card-depth")],
    _case("model-unknown-name", [*SEG[:5], "nope", "--quiet"]),
    _case("model-bare-folder-in-cwd", [*SEG[:5], "model", "--quiet"]),
    _case("model-missing-path", [*SEG[:5], "{w}/nomodel", "--quiet"]),
    # ---- segment: outputs
    _case("segment-o-is-input", ["segment", "{w}/em.tif", "-o", "{w}/em.tif", "--model", "tiny"]),
    _case("segment-o-symlink-to-input", ["segment", "{w}/em.tif", "-o", "{w}/link.tif", "--model", "tiny"],
          "symlink"),
    _case("segment-o-dotdot-input", ["segment", "{w}/em.tif", "-o", "{w}/emptydir/../em.tif", "--model", "tiny"]),
    _case("segment-csv-is-input", [*SEG, "--csv", "{w}/em.tif"]),
    _case("segment-prob-is-o", [*SEG, "--probabilities", "{w}/out.tif"]),
    _case("segment-csv-is-o", [*SEG, "--csv", "{w}/out.tif"]),
    _case("segment-csv-is-earlier-o", ["segment", "{w}/em.tif", "-o", "{w}/labels.tif", "--csv", "{w}/labels.tif",
                                       "--model", "tiny"]),
    _case("segment-o-missing-folder", ["segment", "{w}/em.tif", "-o", "{w}/nodir/out.tif", "--model", "tiny"]),
    _case("segment-prob-missing-folder", [*SEG, "--probabilities", "{w}/nodir/p.tif"]),
    _case("segment-csv-missing-folder", [*SEG, "--csv", "{w}/nodir/o.csv"]),
    _case("segment-o-is-folder", ["segment", "{w}/em.tif", "-o", "{w}/emptydir", "--model", "tiny"]),
    _case("segment-o-parent-is-file", ["segment", "{w}/em.tif", "-o", "{w}/notes.txt/out.tif", "--model", "tiny"]),
    _case("segment-o-unwritable", ["segment", "{w}/em.tif", "-o", "{w}/ro/out.tif", "--model", "tiny"],
          "unwritable"),
    _case("segment-zarr-over-file", ["segment", "{w}/em.tif", "-o", "{w}/thing.zarr", "--model", "tiny"]),
    _case("segment-o-inside-input-folder", ["segment", "{w}/slices", "-o", "{w}/slices/labels.tif", "--model",
                                            "tiny"]),
    # ---- train: options
    *[_case(f"train-{'-'.join(o).strip('-')}", [*TRAIN, *o, "-o", "{w}/run"]) for o in (
        ["--steps", "0"], ["--batch", "-1"], ["--lr", "nan"], ["--lr", "0"], ["--scale", "0"], ["--scale", "1.5"],
        ["--depth", "0"], ["--context", "-1"], ["--val-fraction", "1"], ["--ema", "1"], ["--threads", "0"],
        ["--patch", "0"], ["--val-every", "0"], ["--hard-examples", "nan"], ["--mine-every", "0"],
        ["--seed", "-1"], ["--nproc", "0"], ["--synthetic", "{w}/run", "--synthetic-ratio", "2"],
        ["--appearance", "1.5"], ["--appearance", "-0.1"], ["--appearance", "nan"], ["--appearance", "strong"],
        ["--name", "mito-unet"])],
    _case("train-default-name-reserved", [*TRAIN, "-o", "{w}/mito-unet"]),
    _case("train-missing-images", ["train", "--images", "{w}/missing.tif", "--masks", "{w}/mask.tif", *TINY,
                                   "-o", "{w}/run"]),
    _case("train-count-mismatch", ["train", "--images", "{w}/em.tif", "{w}/em.tif", "--masks", "{w}/mask.tif",
                                   *TINY, "-o", "{w}/run"]),
    _case("train-shape-mismatch", ["train", "--images", "{w}/em.tif", "--masks", "{w}/m32.tif", *TINY,
                                   "-o", "{w}/run"]),
    _case("train-model-bad-card", [*TRAIN, "--model", "{w}/model", "-o", "{w}/run"], "card-scale=0"),
    _case("train-model-unknown", [*TRAIN, "--model", "nope", "-o", "{w}/run"]),
    _case("train-o-is-images", [*TRAIN, "-o", "{w}/em.tif"]),
    _case("train-o-is-file", [*TRAIN, "-o", "{w}/notes.txt"]),
    _case("train-o-missing-parent", [*TRAIN, "-o", "{w}/nodir/run"]),
    _case("train-o-unwritable", [*TRAIN, "-o", "{w}/ro/run"], "unwritable"),
    _case("train-o-is-model", [*TRAIN, "--model", "{w}/model", "-o", "{w}/model"]),
    _case("train-resume-nothing", [*TRAIN, "--resume", "-o", "{w}/run"]),
    _case("train-resume-mixed-last", [*TRAIN, "--resume", "-o", "{w}/run"], "mixed-last"),
    _case("train-resume-other-architecture", [*TRAIN, "--resume", "-o", "{w}/run"], "other-arch-last"),
    # ---- sample
    *[_case(f"sample-{'-'.join(o).strip('-')}", [*SAMPLE, *o]) for o in (
        ["--batch", "-1"], ["--batch", "0"], ["--guidance", "nan"], ["--guidance", "-1"], ["--pixel-noise", "nan"],
        ["--pixel-noise", "-1"], ["--pixel-noise", "abc"], ["--n", "0"], ["--n", "-1"], ["--steps", "0"],
        ["--steps", "5000"], ["--seed", "-1"], ["--threads", "0"], ["--n", "1000000000"],
        ["--sampler", "euler"])],
    _case("sample-masks-missing", [*SAMPLE, "--masks", "{w}/missing.tif"]),
    _case("sample-masks-negative", [*SAMPLE, "--masks", "{w}/neg32.tif"]),
    _case("sample-masks-text", [*SAMPLE, "--masks", "{w}/notes.txt"]),
    _case("sample-masks-bad-size", [*SAMPLE, "--masks", "{w}/m30.tif"]),
    _case("sample-generator-unknown", [*SAMPLE, "--generator", "nope"]),
    _case("sample-generator-missing-path", [*SAMPLE, "--generator", "{w}/nogen"]),
    *[_case(f"sample-{c}", [*SAMPLE, "--generator", "{w}/gen"], c) for c in (
        "gden-tile=0", "gden-tile=30", "gvae-latent_scale=NaN", "gvae-noise_std=-1", "gvae-grey_range=[200,100]",
        "gden-scale=0", "gen-no-denoiser", "gen-json", "gen-sha")],
    _case("sample-o-is-masks", ["sample", "-o", "{w}/m32.tif", "--masks", "{w}/m32.tif", "--generator", "tinygen"]),
    _case("sample-o-is-folder", ["sample", "-o", "{w}/emptydir", "--generator", "tinygen"]),
    _case("sample-o-missing-folder", ["sample", "-o", "{w}/nodir/gen.tif", "--generator", "tinygen"]),
    _case("sample-o-unwritable", ["sample", "-o", "{w}/ro/gen.tif", "--generator", "tinygen"], "unwritable"),
    _case("sample-masks-companion-is-folder", ["sample", "-o", "{w}/gen.tif", "--generator", "tinygen"],
          "companion-dir"),
    # ---- synth
    *[_case(f"synth-{'-'.join(o).strip('-')}", [*SYNTH, *o]) for o in (
        ["--n", "0"], ["--guidance", "nan"], ["--batch", "0"], ["--steps", "0"], ["--threads", "0"],
        ["--n", "1000000000"])],
    _case("synth-o-is-file", ["synth", "-o", "{w}/notes.txt", "--n", "2", "--generator", "tinygen"]),
    _case("synth-o-missing-parent", ["synth", "-o", "{w}/nodir/syn", "--n", "2", "--generator", "tinygen"]),
    _case("synth-o-unwritable", ["synth", "-o", "{w}/ro/syn", "--n", "2", "--generator", "tinygen"], "unwritable"),
    _case("synth-o-is-generator", ["synth", "-o", "{w}/gen", "--n", "2", "--generator", "{w}/gen"]),
    _case("synth-generator-bad-card", [*SYNTH, "--generator", "{w}/gen"], "gden-tile=0"),
    # ---- train-generator
    *[_case(f"train-generator-{'-'.join(o).strip('-')}", [*TGEN, *o, "-o", "{w}/g"]) for o in (
        ["--vae-steps", "-1"], ["--tile", "0"], ["--tile", "30"], ["--scale", "0"], ["--latent-variants", "9"],
        ["--small-crop-p", "2"], ["--vae-minutes", "0"], ["--adv-weight", "nan"], ["--vae-channels", ""],
        ["--vae-batch", "0"], ["--seed", "-1"], ["--fresh-denoiser"])],
    _case("train-generator-missing-images", ["train-generator", "--images", "{w}/missing.tif", "-o", "{w}/g"]),
    _case("train-generator-o-is-images", [*TGEN, "-o", "{w}/em.tif"]),
    _case("train-generator-o-missing-parent", [*TGEN, "-o", "{w}/nodir/g"]),
    _case("train-generator-o-is-generator", [*TGEN, "--generator", "{w}/gen", "-o", "{w}/gen"]),
    _case("train-generator-generator-bad-card", [*TGEN, "--generator", "{w}/gen", "-o", "{w}/g"], "gden-tile=0"),
    # ---- demo
    _case("demo-out-is-file", [*DEMO, "--out", "{w}/notes.txt"]),
    _case("demo-out-missing-parent", [*DEMO, "--out", "{w}/nodir/demo"]),
    _case("demo-out-unwritable", [*DEMO, "--out", "{w}/ro/demo"], "unwritable"),
    _case("demo-model-unknown", [*DEMO, "--out", "{w}/demo", "--model", "nope"]),
    _case("demo-model-bad-card", [*DEMO, "--out", "{w}/demo", "--model", "{w}/model"], "card-tile=0"),
]


def fingerprint(folder: Path) -> dict[str, str]:
    """Every entry under ``folder``: a file's sha256, a link's target, a folder's name."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root) / name
            rel = str(p.relative_to(folder))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def run_cli(argv):
    try:
        return cli.main(argv)
    except SystemExit as exc:  # argparse's own refusals
        return exc.code


@pytest.mark.parametrize("argv, what", CASES)
def test_bad_input_matrix(w, argv, what, capsys, monkeypatch):
    setup(w, what, monkeypatch)
    before = fingerprint(w)
    capsys.readouterr()
    rc = run_cli([a.replace("{w}", str(w)) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err and "error" in lines[0], err
    assert fingerprint(w) == before  # inputs and earlier outputs untouched, nothing half-written left
