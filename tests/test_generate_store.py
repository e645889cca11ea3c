"""Generator folders: safetensors + JSON cards, offline loading, clear errors."""

from __future__ import annotations

import json
import shutil

import pytest
from _generate_helpers import tiny_generator

from napari_cellgen.cli import main
from napari_cellgen.generate.store import GeneratorError, load_generator, register_generator


def test_loads_from_safetensors_without_pickle(tmp_path, monkeypatch):
    import torch

    gdir = tiny_generator(tmp_path / "gen")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_pickle(*a, **k):
        raise AssertionError("torch.load (pickle) must not be used")

    monkeypatch.setattr(torch, "load", no_pickle)
    gen = load_generator(gdir)
    for part in ("vae", "denoiser"):
        raw = (gdir / part / "model.safetensors").read_bytes()
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + n])  # a safetensors header is plain JSON
        assert header
        card = json.loads((gdir / part / "card.json").read_text())
        assert {"architecture", "weights_sha256", "date", "metrics", "training"} <= set(card)
    assert (
        "latent_scale" in gen.vae_card
        and gen.denoiser_card["schedule"]["beta_schedule"] == "squaredcos_cap_v2"
    )
    assert gen.divisor == 16


def test_missing_and_incomplete_generators(tmp_path):
    with pytest.raises(GeneratorError, match="not a folder|No generator"):
        load_generator(tmp_path / "nope")
    with pytest.raises(ValueError):
        load_generator("no-such-generator-name")
    gdir = tiny_generator(tmp_path / "gen")
    shutil.rmtree(gdir / "denoiser")
    with pytest.raises(GeneratorError, match="denoiser"):
        load_generator(gdir)
    gdir2 = tiny_generator(tmp_path / "gen2")
    (gdir2 / "vae" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(GeneratorError, match="safetensors"):
        load_generator(gdir2)
    gdir3 = tiny_generator(tmp_path / "gen3")
    card = json.loads((gdir3 / "denoiser" / "card.json").read_text())
    card["architecture"]["block_out_channels"] = [64, 64]
    (gdir3 / "denoiser" / "card.json").write_text(json.dumps(card))
    with pytest.raises(GeneratorError, match="do not match"):
        load_generator(gdir3)


def test_cli_missing_generator_is_a_clear_error(tmp_path, capsys):
    rc = main(["sample", "-o", str(tmp_path / "o.tif"), "--generator", str(tmp_path / "missing")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "error" in err and "missing" in err and "Traceback" not in err


def test_register_generator(tmp_path):
    from napari_cellgen.generate.store import list_generators

    gdir = tiny_generator(tmp_path / "gen")
    dest = register_generator(gdir, "my gen")
    assert dest.name == "my-gen" and "my-gen" in list_generators()
    assert load_generator("my-gen").denoiser is not None


def test_generate_modules_import_without_torch():
    import subprocess
    import sys

    code = (
        "import sys; import napari_cellgen.generate.sample, napari_cellgen.generate.store, "
        "napari_cellgen.generate.train, napari_cellgen.generate.synth, napari_cellgen.commands.sample, "
        "napari_cellgen.commands.train_generator, napari_cellgen.commands.synth; "
        "print('torch' in sys.modules, 'diffusers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_export_half_precision(tmp_path):
    import numpy as np

    from napari_cellgen.generate.sample import sample_sync
    from napari_cellgen.generate.store import export_generator

    gdir = tiny_generator(tmp_path / "gen")
    sizes = export_generator(gdir, tmp_path / "half", half=True)
    full = sum(f.stat().st_size for f in gdir.rglob("*.safetensors"))
    assert sizes["vae"] + sizes["denoiser"] < 0.6 * full
    a = load_generator(tmp_path / "half")
    assert json.loads((tmp_path / "half" / "vae" / "card.json").read_text())["weights_dtype"] == "float16"
    m = np.zeros((1, 32, 32), np.uint8)
    m[0, 8:20, 8:20] = 1
    assert sample_sync(a, m, steps=2).images.shape == (1, 32, 32)
