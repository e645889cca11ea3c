"""Blockwise segmentation: same results as in memory, one id per object across block borders,
a real LocalCluster, and clear errors (no complete-looking output) when something fails."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
import torch
import zarr
from torch import nn

from napari_cellgen import cli
from napari_cellgen.io.zarr_io import write_zarr
from napari_cellgen.models.store import save_model
from napari_cellgen.models.unet import UNet
from napari_cellgen.segment import cluster, pipeline
from napari_cellgen.segment.blockwise import BlockError, merge_ids, segment_blockwise
from napari_cellgen.segment.pipeline import SegmentOptions, segment

# worker processes cannot import this test module: send its classes by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Bright(nn.Module):
    """A stand-in network: bright pixels are mitochondria, with a little of the z context."""

    def forward(self, x):
        c = x.shape[1] // 2
        return (x[:, c : c + 1] - 0.5) * 8 + 0.3 * (x[:, :1] - x[:, -1:])


CARD = {"context": 1, "scale": 0.5, "tile": 32, "overlap": 8, "architecture": {"depth": 2},
        "normalization": {"low": 1.0, "high": 99.0}, "name": "bright"}


def blobs(shape=(20, 48, 64), n=16, seed=1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    img = np.full(shape, 40, np.uint8)
    for _ in range(n):
        c = rng.uniform(0, shape)
        r = rng.uniform([2, 3, 3], [9, 9, 12])
        img[((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 < 1] = 200
    return (img + rng.normal(0, 10, shape)).clip(0, 255).astype(np.uint8)


def same_up_to_permutation(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a.ravel(), b.ravel()], 1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def read(path) -> np.ndarray:
    return zarr.open_array(str(Path(path) / "0"), mode="r")[:]


@pytest.fixture(scope="module")
def client():
    with cluster.dask_client(workers=2, memory_limit="1GiB") as c:
        yield c


@pytest.mark.parametrize("mode, median, z_smooth", [("3d", False, False), ("3d", True, False), ("2d", False, False),
                                                    ("3d", False, True), ("3d", True, True)])
def test_blockwise_equals_in_memory(tmp_path, mode, median, z_smooth):
    img = blobs()
    opt = SegmentOptions(precision="fp32", min_size=20, device="cpu", mode=mode, median=median, z_smooth=z_smooth,
                         upsample="logit" if z_smooth else "probability")
    ref = segment(img, opt, model=(Bright(), CARD))
    res = segment_blockwise(img, tmp_path / "l.zarr", opt, model=(Bright(), CARD), block_z=4,
                            prob_out=tmp_path / "p.zarr")
    assert len(res.blocks) == 5 and res.n_objects == ref.n_objects > 5
    np.testing.assert_array_equal(read(tmp_path / "p.zarr"), ref.probabilities)
    np.testing.assert_array_equal(read(tmp_path / "l.zarr"), ref.labels)  # even the same ids
    for col, values in ref.table.items():
        np.testing.assert_allclose(res.table[col], values, rtol=1e-9, err_msg=col)


def test_objects_split_by_block_borders_get_one_id(tmp_path):
    img = np.full((12, 40, 40), 20, np.uint8)
    img[:, 4:14, 4:14] = 220  # a rod through every block
    img[1:4, 20:26, 20:24] = img[1:4, 20:26, 30:34] = 220  # two arms in block 0 ...
    img[4:6, 20:26, 20:34] = 220  # ... joined only in block 2 (one object, U-shaped)
    img[9:12, 30:36, 5:11] = 220  # a separate object
    opt = SegmentOptions(precision="fp32", min_size=1, device="cpu", measure=False)
    res = segment_blockwise(img, tmp_path / "l.zarr", opt, model=(Bright(), CARD), block_z=2)
    lab = read(tmp_path / "l.zarr")
    assert res.n_objects == 3
    assert len(np.unique(lab[:, 8, 8])) == 1 and lab[0, 8, 8] > 0  # the rod: one id in all 6 blocks
    assert lab[2, 22, 21] == lab[2, 22, 31] == lab[5, 22, 27] > 0  # the U: one id
    np.testing.assert_array_equal(lab, segment(img, opt, model=(Bright(), CARD)).labels)


def test_merge_ids_orders_by_first_appearance_and_filters_small():
    # block 0: local 1 (size 5), 2 (size 1); block 1: local 1 (size 3) touches block-0 id 2
    infos = [{"k": 2, "sizes": np.array([5, 1])}, {"k": 1, "sizes": np.array([3])}]
    luts, n = merge_ids(infos, [np.array([[2, 1]])], min_size=4)
    assert n == 2 and luts[0].tolist() == [0, 1, 2] and luts[1].tolist() == [0, 2]
    luts, n = merge_ids(infos, [np.zeros((0, 2), np.int64)], min_size=4)
    assert n == 1 and luts[0].tolist() == [0, 1, 0] and luts[1].tolist() == [0, 0]


def test_local_cluster_equals_in_memory(tmp_path, client):
    img = blobs(seed=3)
    src = write_zarr(tmp_path / "em.zarr", img, chunks=(5, 32, 32))
    opt = SegmentOptions(precision="fp32", min_size=20, device="cpu")
    ref = segment(img, opt, model=(Bright(), CARD))
    res = segment_blockwise(src, tmp_path / "l.zarr", opt, model=(Bright(), CARD), block_z=3,
                            client=client, threads=1, prob_out=tmp_path / "p.zarr")
    assert len(res.blocks) == 7 and res.n_objects == ref.n_objects > 5
    assert len(client.scheduler_info()["workers"]) == 2
    prob = read(tmp_path / "p.zarr").astype(np.int16)
    assert np.abs(prob - ref.probabilities).max() <= 1  # uint8 probabilities: within rounding
    assert same_up_to_permutation(read(tmp_path / "l.zarr"), ref.labels)
    np.testing.assert_allclose(res.table["volume_px"], ref.table["volume_px"])
    peaks = cluster.worker_peak_memory(client)
    assert len(peaks) == 2 and all(v > 0 for v in peaks.values())


def test_failing_block_leaves_no_output(tmp_path, client):
    img = blobs(seed=4)
    src = write_zarr(tmp_path / "em.zarr", img, chunks=(4, 48, 64))
    (src / "0" / "2.0.0").write_bytes(b"this chunk is corrupt")  # slices 8-11
    # blocks 2 and 3 both need slice 8 (block 2 as context): either may fail first
    with pytest.raises(BlockError, match=r"\(slices (4-7|8-11)\) failed on a worker: .*decompress"):
        segment_blockwise(src, tmp_path / "l.zarr", SegmentOptions(precision="fp32", device="cpu"),
                          model=(Bright(), CARD), block_z=4, client=client)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["em.zarr"]  # no output, no partial folder


# --------------------------------------------------------------------------- command line
@pytest.fixture
def tiny_model(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLGEN_USER_DIR", str(tmp_path / "user"))
    torch.manual_seed(0)
    card = {"context": 1, "scale": 0.5, "tile": 32, "overlap": 8,
            "normalization": {"kind": "percentile", "low": 1.0, "high": 99.0}}
    save_model(tmp_path / "user" / "models" / "tiny", UNet(3, 1, base=2, depth=2), card)
    pipeline._MODEL_CACHE.clear()
    return "tiny"


def test_cli_zarr_in_and_out_on_a_scheduler_equals_local_path(tmp_path, tiny_model, client, capsys):
    img = blobs((12, 48, 56), n=8, seed=5)
    write_zarr(tmp_path / "em.zarr", img, chunks=(4, 48, 56), pixel_size=(30, 5, 5))
    common = ["--model", tiny_model, "--min-size", "1", "--threshold", "0.45", "--quiet"]
    assert cli.main(["segment", str(tmp_path / "em.zarr"), "-o", str(tmp_path / "local.zarr"),
                     "--probabilities", str(tmp_path / "p_local.zarr"), *common]) == 0
    address = client.scheduler.address  # the module's LocalCluster, reached like a remote one
    rc = cli.main(["segment", str(tmp_path / "em.zarr"), "-o", str(tmp_path / "dask.zarr"),
                   "--scheduler", address, "--block-z", "4", "--probabilities", str(tmp_path / "p_dask.zarr"),
                   "--csv", str(tmp_path / "objects.csv"), *common])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert f"3 blocks on {address}" in err
    p_local, p_dask = read(tmp_path / "p_local.zarr"), read(tmp_path / "p_dask.zarr")
    assert np.abs(p_local.astype(int) - p_dask).max() <= 1
    assert same_up_to_permutation(read(tmp_path / "local.zarr"), read(tmp_path / "dask.zarr"))
    meta = zarr.open_group(str(tmp_path / "dask.zarr"), mode="r").attrs
    assert meta["napari_cellgen"]["complete"] is True and "image-label" in meta
    assert (tmp_path / "objects.csv").read_text().count("\n") == meta["napari_cellgen"]["n_objects"] + 1
    assert not list(tmp_path.glob(".*"))  # no temporary or partial folders left


def test_cli_unreachable_scheduler(tmp_path, tiny_model, capsys, monkeypatch):
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", 1.0)
    path = write_zarr(tmp_path / "em.zarr", blobs((6, 32, 32), n=2))
    out = tmp_path / "labels.zarr"
    rc = cli.main(["segment", str(path), "-o", str(out), "--scheduler", "tcp://127.0.0.1:9",
                   "--model", tiny_model, "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot reach the dask scheduler at tcp://127.0.0.1:9" in err
    assert "Traceback" not in err and not out.exists() and not list(tmp_path.glob(".*"))
    assert "--workers N" in err  # says what to do


@pytest.mark.parametrize("addr, ok", [("tcp://10.0.0.5:8786", True), ("localhost:8786", True),
                                      (" tls://h:1 ", True), ("my-cluster", False), ("host:port", False),
                                      ("tcp://", False), ("", False)])
def test_scheduler_addresses_are_checked_the_same_for_the_cli_and_the_dock(addr, ok):
    if ok:
        assert cluster.check_address(addr) == addr.strip()
    else:
        with pytest.raises(ValueError, match="not a dask scheduler address: use e.g. tcp://HOST:8786"):
            cluster.check_address(addr)


def test_cli_refuses_a_non_address(tmp_path, tiny_model, capsys):
    path = write_zarr(tmp_path / "em.zarr", blobs((6, 32, 32), n=2))
    rc = cli.main(["segment", str(path), "-o", str(tmp_path / "l.zarr"), "--scheduler", "my-cluster",
                   "--model", tiny_model, "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "'my-cluster' is not a dask scheduler address" in err and "Traceback" not in err


def test_cli_read_only_output(tmp_path, tiny_model, capsys, monkeypatch):
    path = write_zarr(tmp_path / "em.zarr", blobs((6, 32, 32), n=2))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:  # root ignores permission bits: make the check see what a user would
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, m, **kw: False if Path(p) == ro else real(p, m, **kw))
    try:
        rc = cli.main(["segment", str(path), "-o", str(ro / "labels.zarr"), "--workers", "1",
                       "--model", tiny_model, "--quiet"])
        err = capsys.readouterr().err
        assert rc == 2 and "cannot write into" in err and "Traceback" not in err
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_tiff_source_is_opened_lazily_by_path(tmp_path):
    import tifffile

    img = blobs((9, 48, 64), n=6, seed=6)
    tifffile.imwrite(tmp_path / "em.tif", img, compression="zlib", photometric="minisblack")
    opt = SegmentOptions(precision="fp32", min_size=5, device="cpu", measure=False)
    res = segment_blockwise(str(tmp_path / "em.tif"), tmp_path / "l.zarr", opt, model=(Bright(), CARD),
                            block_z=4)
    ref = segment(img, opt, model=(Bright(), CARD))
    assert res.n_objects == ref.n_objects > 0
    np.testing.assert_array_equal(read(tmp_path / "l.zarr"), ref.labels)


def test_measurements_of_slabs_too_big_for_memory_are_read_lazily(tmp_path, monkeypatch):
    from napari_cellgen.segment import block_tasks

    monkeypatch.setattr(block_tasks, "SLAB_BYTES", 0)
    img = blobs(seed=8)
    opt = SegmentOptions(precision="fp32", min_size=20, device="cpu")
    ref = segment(img, opt, model=(Bright(), CARD))
    res = segment_blockwise(img, tmp_path / "l.zarr", opt, model=(Bright(), CARD), block_z=5)
    for col, values in ref.table.items():
        np.testing.assert_allclose(res.table[col], values, rtol=1e-9, err_msg=col)


def test_in_memory_and_blockwise_agree_at_the_minimum_size(tmp_path):
    # objects spanning slices and block borders, with min_size set at their own sizes (+0/+1):
    # both paths must keep and drop exactly the same objects, with the same ids
    img = blobs(seed=7)
    opt0 = SegmentOptions(precision="fp32", min_size=1, device="cpu", measure=False)
    ref = segment(img, opt0, model=(Bright(), CARD))
    sizes = np.bincount(ref.labels.ravel())[1:]
    multi = [int(s) for i, s in enumerate(sizes, 1) if len(np.unique(np.nonzero(ref.labels == i)[0])) > 2]
    assert len(multi) >= 3
    for j, ms in enumerate(sorted(multi)[:3]):
        for m in (ms, ms + 1):
            opt = SegmentOptions(precision="fp32", min_size=m, device="cpu", measure=False)
            mem = segment(img, opt, model=(Bright(), CARD))
            res = segment_blockwise(img, tmp_path / f"l{j}-{m}.zarr", opt, model=(Bright(), CARD), block_z=3)
            assert res.n_objects == mem.n_objects == int((sizes >= m).sum())
            np.testing.assert_array_equal(read(tmp_path / f"l{j}-{m}.zarr"), mem.labels)
