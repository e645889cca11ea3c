"""Zarr / OME-Zarr reading and atomic writing (no napari viewer needed)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from napari_cellgen.io import detect, read_stack
from napari_cellgen.io.reader import get_reader
from napari_cellgen.io.tiff import ReadError
from napari_cellgen.io.zarr_io import (
    ZarrWriter,
    layer_data_multiscale,
    open_levels,
    read_zarr,
    write_zarr,
)


def test_round_trip_keeps_data_pixel_size_and_is_lazy(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, (7, 40, 50), dtype=np.uint8)
    path = write_zarr(tmp_path / "em.zarr", data, chunks=(2, 16, 16), pixel_size=(30.0, 5.0, 5.0))
    assert detect(path) == "zarr"
    arr, meta = read_stack(path)
    assert isinstance(arr, zarr.Array)  # lazy: nothing read until indexed
    assert arr.chunks == (2, 16, 16)
    np.testing.assert_array_equal(arr[:], data)
    assert meta["format"] == "zarr" and meta["storage"] == "lazy" and meta["axes"] == "ZYX"
    assert meta["pixel_size_nm"] == (30.0, 5.0, 5.0) and meta["unit"] == "nm"
    assert meta["layer_type"] == "image" and not meta["warnings"]
    # labels keep their dtype and are marked as labels
    lab = (data > 128).astype(np.uint32)
    write_zarr(tmp_path / "labels.zarr", lab, labels=True)
    arr, meta = read_stack(tmp_path / "labels.zarr")
    assert arr.dtype == np.uint32 and meta["layer_type"] == "labels"
    # the npe2 reader accepts the folder
    assert get_reader(str(path)) is not None


def test_multiscale_ome_zarr_and_singleton_axes(tmp_path):
    g = zarr.open_group(str(tmp_path / "ms.zarr"), mode="w", zarr_format=2)
    full = np.arange(4 * 32 * 32, dtype=np.uint16).reshape(1, 1, 4, 32, 32)
    g.create_array("s0", data=full, chunks=(1, 1, 2, 16, 16))
    g.create_array("s1", data=full[..., ::2, ::2], chunks=(1, 1, 2, 16, 16))
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}] + [
        {"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]
    g.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": [
        {"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 0.04, 0.01, 0.01]}]},
        {"path": "s1", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 0.04, 0.02, 0.02]}]},
    ]}]
    levels, info = open_levels(tmp_path / "ms.zarr")
    assert [lv.shape for lv in levels] == [(4, 32, 32), (4, 16, 16)] and info["axes"] == "ZYX"
    data, meta = read_zarr(tmp_path / "ms.zarr")
    np.testing.assert_array_equal(np.asarray(data[2]), full[0, 0, 2])
    assert meta["pixel_size_nm"] == pytest.approx((40.0, 10.0, 10.0))
    assert meta["levels"] == [(4, 32, 32), (4, 16, 16)]
    layer, kwargs, kind = layer_data_multiscale(tmp_path / "ms.zarr")
    assert isinstance(layer, list) and len(layer) == 2 and kwargs["multiscale"] and kind == "image"


def test_ambiguous_group_gives_a_clear_error(tmp_path):
    g = zarr.open_group(str(tmp_path / "two.zarr"), mode="w")
    g.create_array("a", shape=(2, 4, 4), dtype="uint8")
    g.create_array("b", shape=(2, 4, 4), dtype="uint8")
    with pytest.raises(ReadError, match="2 arrays"):
        read_stack(tmp_path / "two.zarr")


def test_writer_is_atomic(tmp_path):
    target = tmp_path / "out.zarr"
    with pytest.raises(RuntimeError), ZarrWriter(target, (4, 8, 8), np.uint8) as w:
        w.array[:2] = 1
        raise RuntimeError("the job died")
    assert list(tmp_path.iterdir()) == []  # no output, no partial folder
    # replacing an older zarr only at commit; a folder that is not a zarr is never replaced
    write_zarr(target, np.ones((2, 4, 4), np.uint8))
    w = ZarrWriter(target, (2, 4, 4), np.uint8)
    w.array[:] = 7
    assert read_stack(target)[0][0, 0, 0] == 1  # still the old one
    w.commit()
    assert read_stack(target)[0][0, 0, 0] == 7 and len(list(tmp_path.iterdir())) == 1
    (tmp_path / "data.zarr").mkdir()
    (tmp_path / "data.zarr" / "precious.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a zarr"):
        ZarrWriter(tmp_path / "data.zarr", (2, 4, 4), np.uint8)


def test_unfinished_zarr_warns(tmp_path):
    w = ZarrWriter(tmp_path / "x.zarr", (2, 4, 4), np.uint8)
    _, meta = read_zarr(w.tmp_path)  # what a reader would see of a half-written job
    assert any("not finished" in m for m in meta["warnings"])
    w.abort()
