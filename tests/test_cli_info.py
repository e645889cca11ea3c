"""``cellgen --help``, ``cellgen info`` and the headless ``cellgen demo``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_cellgen import cli


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in cli.SUBCOMMANDS:
        assert f"    {name}" in out, name


def _option_blocks(helptext: str) -> dict[str, str]:
    """Each option's entry in an argparse help text (flags and wrapped help joined by single spaces)."""
    blocks, current = {}, None
    for line in helptext.splitlines():
        if line.startswith("  -"):
            current = line.split()[0].rstrip(",")
            blocks[current] = " ".join(line.split())
        elif current and line.startswith("    "):
            blocks[current] += " " + " ".join(line.split())
        else:
            current = None
    return blocks


@pytest.mark.parametrize("name", cli.SUBCOMMANDS)
def test_every_subcommand_help_runs_and_shows_the_defaults(name, capsys):
    import argparse

    with pytest.raises(SystemExit) as exc:
        cli.main([name, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: cellgen {name}")
    blocks = _option_blocks(out)
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    shown = 0
    for action in sub.choices[name]._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS or action.dest == "help":
            continue
        block = blocks.get(action.option_strings[0])
        assert block, f"cellgen {name} --help does not show {action.option_strings[0]}"
        if action.required or action.nargs == 0 or any(action.default is v for v in (None, False)):
            continue  # no default to show (the help says what None means in words)
        assert "default" in block, (name, block)
        default = action.default
        if isinstance(default, (int, float)) and not isinstance(default, bool):  # "default 0" for 0.0
            said = re.findall(r"default:?\s*([-+]?\d[\d.]*(?:e[-+]?\d+)?)", block)
            assert any(float(v.rstrip(".")) == default for v in said), (name, block, default)
        else:
            seq = isinstance(default, (list, tuple))
            texts = {str(default), *([" ".join(map(str, default)), ",".join(map(str, default))] if seq else [])}
            assert any(t in block for t in texts), (name, block, default)  # as typed: "1 2" or "1,2"
        shown += 1
    assert shown or name in ("info", "demo", "export")


def test_console_script_help_runs():
    exe = Path(sys.executable).with_name("cellgen")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "napari_cellgen.cli"]
    proc = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "info" in proc.stdout


def _fake_user_model(tmp_path, monkeypatch, name="my-model"):
    folder = tmp_path / "cellgen-user" / "models" / name
    folder.mkdir(parents=True)
    (folder / "card.json").write_text(json.dumps({"architecture": {}}))
    (folder / "model.safetensors").write_bytes(b"")
    return folder


def test_info_reports_versions_devices_and_models(tmp_path, monkeypatch, capsys):
    _fake_user_model(tmp_path, monkeypatch)
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "napari-cellgen" in out and "torch devices" in out and "cpu" in out
    assert "CPU bfloat16" in out  # whether --precision bf16 is worth it here
    assert "my-model" in out and "user" in out
    assert cli.main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["versions"]["numpy"] == np.__version__
    assert "cpu" in info["torch_devices"]
    assert info["cpu_native_bf16"] == torch.ops.mkldnn._is_mkldnn_bf16_supported()
    folder = tmp_path / "cellgen-user" / "models" / "my-model"
    assert {"name": "my-model", "kind": "user", "path": str(folder)} in info["models"]


# ----------------------------------------------------------------------------- demo
@pytest.fixture
def no_models(tmp_path, monkeypatch):
    from napari_cellgen.models import store

    monkeypatch.setattr(store, "bundled_dir", lambda: tmp_path / "no-bundled-models")


def test_headless_demo_without_a_model_writes_the_sample(tmp_path, no_models, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--headless", "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"sample_em.tif", "sample_mito_truth.tif", "preview.png", "summary.json"} <= names
    summary = json.loads((out / "summary.json").read_text())
    assert summary["segmentation"].startswith("skipped")
    assert summary["pixel_size_nm"] == [5.0, 5.0, 5.0]


def test_headless_demo_segments_with_the_default_model(tmp_path, no_models, monkeypatch):
    import torch

    from napari_cellgen.models.store import save_model
    from napari_cellgen.models.unet import UNet
    from napari_cellgen.segment import pipeline

    card = {
        "context": 1,
        "scale": 0.5,
        "tile": 128,
        "overlap": 16,
        "normalization": {"kind": "percentile", "low": 1.0, "high": 99.0},
    }
    torch.manual_seed(0)
    save_model(tmp_path / "cellgen-user" / "models" / "mito-unet", UNet(3, 1, base=2, depth=2), card)
    pipeline._MODEL_CACHE.clear()
    # an untrained net gives no objects; make "dark is mitochondrion" the model's answer
    monkeypatch.setattr(
        "napari_cellgen.segment.predict.make_forward",
        lambda m, device="cpu", tta=1: lambda b: (b[:, 1] < np.percentile(b[:, 1], 10)).astype(np.float32),
    )
    out = tmp_path / "demo"
    assert cli.main(["demo", "--headless", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "mito-unet" and "dice_vs_truth" in summary
    from napari_cellgen.io import read_stack

    labels, meta = read_stack(out / "mito_labels.tif")
    assert meta["layer_type"] == "labels" and labels.shape == (8, 512, 512)


def test_info_lists_generators_as_well_as_models(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "segmentation models:" in out and "generators:" in out
    assert "mito-unet" in out and "mito-gen" in out
    assert cli.main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {"name": "mito-gen", "kind": "bundled"}.items() <= next(
        g for g in info["generators"] if g["name"] == "mito-gen").items()
    assert set(info["generator_dirs"]) == {"bundled", "user"}
