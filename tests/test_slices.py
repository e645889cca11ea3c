"""Stacks of unrelated images are segmented slice by slice, context included (issue 14)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_cellgen import cli
from napari_cellgen.models.store import save_model
from napari_cellgen.models.unet import UNet
from napari_cellgen.segment import pipeline
from napari_cellgen.segment.pipeline import SegmentOptions, segment
from napari_cellgen.segment.slices import THRESHOLD, adjacent_correlation, independent_slices, resolve


def _volume(n=12, seed=0):
    """A smooth 3D texture: neighbouring slices alike, as in an EM volume."""
    rng = np.random.default_rng(seed)
    v = ndi.gaussian_filter(rng.normal(size=(n, 96, 96)), (3, 4, 4))
    return ((v - v.min()) / np.ptp(v) * 255).astype(np.uint8)


def _tiles(n=12, seed=0):
    """The same texture, each slice from a different volume: unrelated neighbours."""
    return np.stack([_volume(1, seed + i)[0] for i in range(n)])


def test_volume_and_unrelated_tiles_are_told_apart():
    vol, tiles = _volume(), _tiles()
    assert adjacent_correlation(vol) > 0.9
    assert abs(adjacent_correlation(tiles)) < 0.2
    assert not independent_slices(vol) and independent_slices(tiles)
    assert np.isnan(adjacent_correlation(vol[0]))  # a 2D image has no neighbours


def test_resolve_choices():
    vol, tiles = _volume(), _tiles()
    assert resolve(vol, "auto", "3d") == (False, "3d", "")
    ind, mode, msg = resolve(tiles, "auto", "3d")
    assert ind and mode == "2d" and "separate images" in msg and f"{THRESHOLD}" in msg
    assert resolve(vol, "auto", "2d")[:2] == (True, "2d")  # per-slice labels: per-slice context too
    assert resolve(tiles, "volume", "3d") == (False, "3d", "")  # the user's explicit choice wins
    assert resolve(vol, "independent", "3d") == (True, "2d", "")
    with pytest.raises(ValueError, match="slices must be one of"):
        resolve(vol, "tiles", "3d")


@pytest.fixture
def context_spy(tmp_path, monkeypatch):
    """A registered 2.5D model (1 slice of context each side) whose forward records its inputs."""
    monkeypatch.setenv("CELLGEN_USER_DIR", str(tmp_path / "user"))
    card = {"context": 1, "scale": 1.0, "tile": 32, "overlap": 8,
            "normalization": {"kind": "percentile", "low": 1.0, "high": 99.0}}
    save_model(tmp_path / "user" / "models" / "spy", UNet(3, 1, base=2, depth=2), card)
    pipeline._MODEL_CACHE.clear()
    seen = []

    def forward(m, device="cpu", tta=1):
        def fn(batch):
            seen.append(batch.copy())
            return (batch[:, 1] > 0.5).astype(np.float32)

        return fn

    monkeypatch.setattr("napari_cellgen.segment.predict.make_forward", forward)
    return seen


def _all_context_is_the_slice(seen) -> bool:
    b = np.concatenate(seen)
    return bool(np.array_equal(b[:, 0], b[:, 1]) and np.array_equal(b[:, 2], b[:, 1]))


def test_unrelated_stack_is_detected_and_segmented_slice_by_slice(context_spy):
    tiles = _tiles(6)
    res = segment(tiles, SegmentOptions(precision="fp32", model="spy", min_size=1, measure=False))
    assert "separate images" in res.message
    assert res.options["independent"] and res.options["mode"] == "2d"
    assert _all_context_is_the_slice(context_spy)  # never a neighbouring tile as context
    # 2D labels: no object id spans two tiles
    ids = [set(np.unique(s)) - {0} for s in res.labels]
    assert all(not (a & b) for a, b in zip(ids, ids[1:], strict=False))

    context_spy.clear()
    res = segment(tiles, SegmentOptions(precision="fp32", model="spy", min_size=1, measure=False, slices="volume"))
    assert res.message == "" and not _all_context_is_the_slice(context_spy)

    context_spy.clear()
    res = segment(_volume(6), SegmentOptions(precision="fp32", model="spy", min_size=1, measure=False))
    assert res.message == "" and res.options["mode"] == "3d" and not _all_context_is_the_slice(context_spy)


def test_cli_2d_means_no_context_and_auto_says_what_it_did(tmp_path, context_spy, capsys):
    import tifffile

    path, out = tmp_path / "vol.tif", tmp_path / "lab.tif"
    tifffile.imwrite(path, _volume(6))
    assert cli.main(["segment", str(path), "-o", str(out), "--model", "spy", "--2d", "--quiet"]) == 0
    assert _all_context_is_the_slice(context_spy)
    assert "separate images" not in capsys.readouterr().err

    context_spy.clear()
    tifffile.imwrite(path, _tiles(6))
    assert cli.main(["segment", str(path), "-o", str(out), "--model", "spy", "--quiet"]) == 0
    assert _all_context_is_the_slice(context_spy)
    assert "separate images" in capsys.readouterr().err


def test_blockwise_honours_independent_slices(tmp_path, context_spy):
    from napari_cellgen.segment.blockwise import segment_blockwise

    tiles = _tiles(6)
    res = segment_blockwise(tiles, tmp_path / "lab.zarr",
                            SegmentOptions(precision="fp32", model="spy", min_size=1, measure=False),
                            block_z=2)
    assert "separate images" in res.message
    assert _all_context_is_the_slice(context_spy)
