"""Synthetic training sets round-trip (images and masks aligned, counts right)."""

from __future__ import annotations

import numpy as np
import pytest
from _generate_helpers import tiny_generator

from napari_cellgen._progress import run
from napari_cellgen.cli import main
from napari_cellgen.generate.synth import SyntheticSetError, read_synthetic_set, write_synthetic_set


def test_synthetic_set_round_trip(tmp_path):
    gdir = tiny_generator(tmp_path / "gen")
    meta = run(write_synthetic_set(tmp_path / "syn", 5, gdir, seed=2, steps=2))
    images, masks, meta2 = read_synthetic_set(tmp_path / "syn")
    assert images.shape == masks.shape and len(images) == 5 == meta["n"] == meta2["n"]
    assert images.dtype == np.uint8 and masks.dtype == np.uint16
    assert meta2["seed"] == 2 and meta2["generator"]


def test_cli_synth_and_errors(tmp_path):
    gdir = tiny_generator(tmp_path / "gen")
    assert (
        main(
            [
                "synth",
                "-o",
                str(tmp_path / "s"),
                "--n",
                "3",
                "--generator",
                str(gdir),
                "--steps",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    a = read_synthetic_set(tmp_path / "s")
    assert (
        main(
            [
                "synth",
                "-o",
                str(tmp_path / "t"),
                "--n",
                "3",
                "--generator",
                str(gdir),
                "--steps",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    b = read_synthetic_set(tmp_path / "t")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])  # same seed, same set
    with pytest.raises(SyntheticSetError, match="not a synthetic set"):
        (tmp_path / "empty").mkdir()
        read_synthetic_set(tmp_path / "empty")
