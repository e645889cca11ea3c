"""The npe2 manifest: valid, every python_name resolves, no dead entries, shipped as written."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from npe2 import PluginManifest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "napari.yaml"  # the design card: the manifest's source of truth


@pytest.fixture(scope="module")
def installed() -> PluginManifest:
    return PluginManifest.from_distribution("napari-cellgen")


def test_installed_manifest_is_the_top_level_one(installed):
    assert SOURCE.is_file(), "napari.yaml must stay at the repository's top level"
    source = PluginManifest.from_file(SOURCE)
    skip = {"package_metadata"}
    assert installed.model_dump(exclude=skip) == source.model_dump(exclude=skip)
    assert installed.name == "napari-cellgen"


def test_every_python_name_resolves(installed):
    for command in installed.contributions.commands:
        module, _, attr = command.python_name.partition(":")
        obj = getattr(importlib.import_module(module), attr, None)
        assert callable(obj), f"{command.id}: {command.python_name} does not resolve to a callable"


def test_no_dead_or_missing_commands(installed):
    c = installed.contributions
    used = {r.command for r in c.readers or []} | {w.command for w in c.writers or []}
    used |= {s.command for s in c.sample_data or []} | {w.command for w in c.widgets or []}
    used |= {item.command for items in (c.menus or {}).values() for item in items if hasattr(item, "command")}
    defined = {cmd.id for cmd in c.commands}
    assert used == defined


def test_reader_writer_sample_widget_contributions(installed):
    c = installed.contributions
    (reader,) = c.readers
    assert {"*.tif", "*.tiff"} <= set(reader.filename_patterns) and reader.accepts_directories
    assert {tuple(str(t) for t in w.layer_types) for w in c.writers} >= {("labels",), ("image",)}
    assert [s.key for s in c.sample_data] == ["em_mito"]
    assert "EM stack" in {w.display_name for w in c.widgets}


def test_npe2_validate_passes_on_the_installed_package():
    proc = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "--imports", "napari-cellgen"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid" in proc.stdout


def test_manifest_yaml_has_no_legacy_npe1_hooks():
    text = yaml.safe_load(SOURCE.read_text())
    assert "napari_hook_implementation" not in SOURCE.read_text()
    assert text["name"] == "napari-cellgen"
