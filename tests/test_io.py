"""Reading and writing EM stacks (napari_cellgen.io): no viewer, small files in tmp_path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_cellgen.io import LazyStack, ReadError, detect, percentile_limits, read_stack, write_tiff
from napari_cellgen.io.reader import get_reader, layer_data
from napari_cellgen.io.writer import pixel_size_for, write_image, write_labels

RNG = np.random.default_rng(0)


def _stack(shape=(5, 24, 32), dtype=np.uint16):
    if np.dtype(dtype).kind == "f":
        return RNG.random(shape, dtype=np.float32).astype(dtype)
    return RNG.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)


# ----------------------------------------------------------------------------- reading
def test_2d_uint8(tmp_path):
    img = _stack((24, 32), np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", img)
    data, meta = read_stack(tmp_path / "a.tif")
    np.testing.assert_array_equal(data, img)
    assert meta["axes"] == "YX"
    assert meta["scale"] == (1.0, 1.0)
    assert meta["pixel_size_nm"] is None and meta["unit"] == "pixel"
    assert meta["storage"] == "memory" and meta["layer_type"] == "image"


def test_3d_uint16_plain_pages(tmp_path):
    img = _stack((6, 24, 32), np.uint16)
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tw:  # no metadata: a bare page sequence
        for plane in img:
            tw.write(plane, metadata=None)
    data, meta = read_stack(tmp_path / "pages.tif")
    np.testing.assert_array_equal(data, img)
    assert data.dtype == np.uint16
    assert meta["axes"] == "ZYX" and meta["shape"] == (6, 24, 32)


@pytest.mark.parametrize("compression", ["lzw", "zlib", "packbits"])
def test_compressed_stacks(tmp_path, compression):
    img = _stack((5, 24, 32), np.uint8)
    tifffile.imwrite(tmp_path / "c.tif", img, compression=compression, photometric="minisblack")
    np.testing.assert_array_equal(read_stack(tmp_path / "c.tif")[0], img)
    np.testing.assert_array_equal(read_stack(tmp_path / "c.tif", memory_limit=1)[0][2], img[2])


def test_float32_imagej_um_calibration(tmp_path):
    img = _stack((4, 24, 32), np.float32)
    tifffile.imwrite(
        tmp_path / "ij.tif",
        img,
        imagej=True,
        resolution=(1 / 0.004, 1 / 0.004),
        metadata={"spacing": 0.03, "unit": "\\u00B5m", "axes": "ZYX"},
    )
    data, meta = read_stack(tmp_path / "ij.tif")
    np.testing.assert_array_equal(data, img)
    assert meta["format"] == "imagej-tiff"
    assert meta["pixel_size_nm"] == pytest.approx((30.0, 4.0, 4.0))
    assert meta["scale"] == pytest.approx((30.0, 4.0, 4.0)) and meta["unit"] == "nm"


@pytest.mark.parametrize("unit,factor", [(None, 1000.0), ("nm", 1.0)])  # OME's default unit is µm
def test_ome_physical_size(tmp_path, unit, factor):
    img = _stack((3, 24, 32), np.uint8)
    md = {"axes": "ZYX", "PhysicalSizeX": 6.0, "PhysicalSizeY": 7.0, "PhysicalSizeZ": 40.0}
    if unit:
        md.update(PhysicalSizeXUnit=unit, PhysicalSizeYUnit=unit, PhysicalSizeZUnit=unit)
    tifffile.imwrite(tmp_path / "x.ome.tif", img, metadata=md)
    data, meta = read_stack(tmp_path / "x.ome.tif")
    np.testing.assert_array_equal(data, img)
    assert meta["format"] == "ome-tiff"
    assert meta["pixel_size_nm"] == pytest.approx((40 * factor, 7 * factor, 6 * factor))


def test_missing_z_spacing_is_assumed_isotropic_and_said(tmp_path):
    tifffile.imwrite(
        tmp_path / "a.tif",
        _stack((3, 8, 8)),
        imagej=True,
        resolution=(0.2, 0.2),
        metadata={"unit": "nm", "axes": "ZYX"},
    )
    _, meta = read_stack(tmp_path / "a.tif")
    assert meta["scale"] == pytest.approx((5.0, 5.0, 5.0))
    assert any("z spacing" in note for note in meta["notes"])


def test_bigtiff(tmp_path):
    img = _stack((5, 24, 32), np.uint16)
    tifffile.imwrite(tmp_path / "big.tif", img, bigtiff=True, photometric="minisblack")
    data, meta = read_stack(tmp_path / "big.tif")
    assert meta["bigtiff"] is True
    np.testing.assert_array_equal(data, img)


@pytest.mark.parametrize("samples", [3, 4])
def test_rgb_becomes_gray_with_a_warning(tmp_path, samples):
    rgb = _stack((2, 16, 16, samples), np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    data, meta = read_stack(tmp_path / "rgb.tif")
    expected = np.rint(rgb[..., :3].astype(np.float32) @ np.float32([0.2125, 0.7154, 0.0721]))
    assert data.shape == (2, 16, 16) and data.dtype == np.uint8
    np.testing.assert_allclose(data, expected, atol=1)
    assert any("grayscale" in w for w in meta["warnings"])
    lazy, _ = read_stack(tmp_path / "rgb.tif", memory_limit=1)
    np.testing.assert_array_equal(lazy[1], data[1])


def test_folder_of_png_slices_natural_order(tmp_path):
    folder = tmp_path / "slices"
    folder.mkdir()
    for i in (1, 2, 10, 3):
        iio.imwrite(folder / f"slice_{i}.png", np.full((12, 20), i, np.uint8))
    (folder / "notes.txt").write_text("not a slice")
    assert detect(folder) == "folder"
    data, meta = read_stack(folder)
    assert data[:, 0, 0].tolist() == [1, 2, 3, 10]
    assert meta["format"] == "folder" and meta["shape"] == (4, 12, 20)
    lazy, meta = read_stack(folder, memory_limit=1)
    assert isinstance(lazy, LazyStack) and meta["storage"] == "lazy"
    assert lazy[2, 0, 0] == 3


def test_folder_of_tif_slices_keeps_pixel_size(tmp_path):
    folder = tmp_path / "tifs"
    folder.mkdir()
    for i in range(3):
        write_tiff(folder / f"z{i:03d}.tif", np.full((8, 9), i, np.uint8), (4.0, 4.0))
    data, meta = read_stack(folder)
    assert data.shape == (3, 8, 9)
    assert meta["pixel_size_nm"] == pytest.approx((4.0, 4.0, 4.0))


def test_folder_with_a_slice_of_another_size(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    iio.imwrite(folder / "1.png", np.zeros((8, 8), np.uint8))
    iio.imwrite(folder / "2.png", np.zeros((9, 8), np.uint8))
    with pytest.raises(ReadError, match="2.png.*same size"):
        read_stack(folder)


@pytest.mark.parametrize("compression", [None, "zlib"])
@pytest.mark.parametrize("keep", [0.4, 0.9])
def test_truncated_file_gives_a_clear_error(tmp_path, compression, keep):
    write_tiff(tmp_path / "full.tif", _stack((6, 32, 32)), 5.0, compression=compression)
    raw = (tmp_path / "full.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(raw[: int(len(raw) * keep)])
    for limit in (None, 1):  # in memory and lazily
        with pytest.raises(ReadError, match="cut.tif looks corrupt or truncated"):
            read_stack(tmp_path / "cut.tif", memory_limit=limit)


def test_garbage_after_a_tiff_header(tmp_path):
    (tmp_path / "broken.tif").write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    assert get_reader(str(tmp_path / "broken.tif")) is not None  # it is ours to report
    with pytest.raises(ReadError, match="broken.tif"):
        read_stack(tmp_path / "broken.tif")


@pytest.mark.parametrize("name", ["notes.txt", "fake.tif"])
def test_non_image_file(tmp_path, name):
    path = tmp_path / name
    path.write_text("this is not an image\n")
    assert detect(path) is None
    assert get_reader(str(path)) is None  # lets other readers try
    with pytest.raises(ReadError, match="not a TIFF"):
        read_stack(path)


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_stack(tmp_path / "nope.tif")
    (tmp_path / "empty").mkdir()
    assert get_reader(str(tmp_path / "empty")) is None
    with pytest.raises(ReadError, match="no .tif"):
        read_stack(tmp_path / "empty")


# ----------------------------------------------------------------------------- laziness
def test_stack_above_the_memory_limit_opens_without_reading_all_pages(tmp_path):
    img = _stack((40, 128, 128), np.uint16)  # 1.3 MB
    write_tiff(tmp_path / "big.tif", img, (20.0, 5.0, 5.0), compression="zlib")
    limit = img.nbytes // 10
    tracemalloc.start()
    try:
        data, meta = read_stack(tmp_path / "big.tif", memory_limit=limit)
        plane = np.asarray(data[17])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(data, LazyStack) and meta["storage"] == "lazy"
    assert data.reads <= 3  # first and last page checked at open, then page 17
    assert peak < img.nbytes / 5
    np.testing.assert_array_equal(plane, img[17])
    np.testing.assert_array_equal(data[3:7, 10:20, ::3], img[3:7, 10:20, ::3])
    np.testing.assert_array_equal(data[[0, 39], 5], img[[0, 39], 5])
    np.testing.assert_array_equal(data[..., 7], img[..., 7])
    assert meta["scale"] == (20.0, 5.0, 5.0)
    reads = data.reads
    lo, hi = percentile_limits(data, 1, 99)
    assert data.reads - reads <= 5 and lo < hi
    _, kwargs, kind = layer_data(data, meta)
    assert kind == "image" and "contrast_limits" in kwargs


def test_uncompressed_stack_above_the_limit_is_memory_mapped(tmp_path):
    img = _stack((10, 64, 64), np.uint8)
    write_tiff(tmp_path / "raw.tif", img, 5.0, compression=None)
    data, meta = read_stack(tmp_path / "raw.tif", memory_limit=1000)
    assert isinstance(data, np.memmap) and meta["storage"] == "memmap"
    np.testing.assert_array_equal(data[4], img[4])


# ----------------------------------------------------------------------------- writing
@pytest.mark.parametrize(
    "dtype,top,stored", [(np.int32, 7, np.uint8), (np.int64, 300, np.uint16), (np.uint32, 70000, np.uint32)]
)
def test_labels_round_trip_keeps_values_scale_and_kind(tmp_path, dtype, top, stored):
    labels = np.zeros((3, 16, 20), dtype)
    labels[1, 2:6, 3:9] = top
    labels[2, 8:12, 1:4] = 1
    path = write_tiff(tmp_path / "labels.tif", labels, (30.0, 4.0, 4.0), labels=True)
    data, meta = read_stack(path)
    np.testing.assert_array_equal(data, labels)
    assert data.dtype == stored
    assert meta["layer_type"] == "labels"
    assert meta["pixel_size_nm"] == pytest.approx((30.0, 4.0, 4.0))
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)  # not mkstemp's private mode


def test_write_is_atomic(tmp_path, monkeypatch):
    path = write_tiff(tmp_path / "x.tif", np.ones((4, 4), np.uint8))

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", boom)
    with pytest.raises(OSError, match="disk full"):
        write_tiff(path, np.zeros((4, 4), np.uint8))
    assert os.listdir(tmp_path) == ["x.tif"]  # no temp file left behind
    np.testing.assert_array_equal(read_stack(path)[0], 1)  # the old file is intact


def test_write_lazy_data_plane_by_plane(tmp_path):
    img = _stack((5, 16, 16), np.uint16)
    write_tiff(tmp_path / "src.tif", img, compression="zlib")
    lazy, _ = read_stack(tmp_path / "src.tif", memory_limit=1)
    write_tiff(tmp_path / "copy.tif", lazy, (5.0, 5.0, 5.0))
    np.testing.assert_array_equal(read_stack(tmp_path / "copy.tif")[0], img)


def test_napari_writers_keep_the_scale(tmp_path):
    labels = np.zeros((2, 8, 8), np.int32)
    labels[0, 1:3, 1:3] = 5
    meta = {"scale": [50.0, 5.0, 5.0], "units": ["nanometer"] * 3, "metadata": {}}
    (out,) = write_labels(str(tmp_path / "l.tif"), labels, meta)
    data, m = read_stack(out)
    assert m["layer_type"] == "labels" and m["scale"] == (50.0, 5.0, 5.0)
    img = _stack((2, 8, 8), np.float32)
    (out,) = write_image(str(tmp_path / "i.tif"), img, {"scale": [1.0, 0.5, 0.5], "units": ["pixel"] * 3})
    data, m = read_stack(out)
    np.testing.assert_array_equal(data, img)
    assert m["scale"] == (1.0, 0.5, 0.5) and m["pixel_size_nm"] is None
    assert pixel_size_for({"scale": [1, 1], "units": ["micrometer"] * 2}, 2) == ((1000.0, 1000.0), "nm")


def test_reader_layer_tuple_has_scale_units_and_metadata(tmp_path):
    write_tiff(tmp_path / "em.tif", _stack((3, 8, 8), np.uint8), (40.0, 5.0, 5.0))
    reader = get_reader([str(tmp_path / "em.tif")])
    ((data, kwargs, kind),) = reader([str(tmp_path / "em.tif")])
    assert kind == "image" and kwargs["name"] == "em"
    assert kwargs["scale"] == (40.0, 5.0, 5.0) and kwargs["units"] == ("nm", "nm", "nm")
    assert kwargs["metadata"]["pixel_size_nm"] == (40.0, 5.0, 5.0)
    json.dumps(kwargs["metadata"])  # plain data, so it can be saved with the layer
    assert get_reader([str(tmp_path / "em.tif")] * 2) is None


# ----------------------------------------------------------------------------- imports
def test_import_does_not_pull_in_qt_torch_or_napari():
    code = (
        "import sys, json, napari_cellgen, napari_cellgen.io, napari_cellgen.io.reader, "
        "napari_cellgen.io.writer, napari_cellgen._sample_data;"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(json.loads(out))
    assert not loaded & {"torch", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui"}


def test_pages_written_one_by_one_open_as_a_stack(tmp_path):
    """A TIFF written one page per write() (no metadata) holds one series per page."""
    import tifffile

    from napari_cellgen.io import read_stack

    path = tmp_path / "pages.tif"
    planes = [np.full((6, 7), z, np.uint8) for z in range(5)]
    with tifffile.TiffWriter(path) as tw:
        for plane in planes:
            tw.write(plane, compression="zlib", contiguous=False, photometric="minisblack")
    assert len(tifffile.TiffFile(path).series) == 5
    data, meta = read_stack(path)
    assert data.shape == (5, 6, 7)
    np.testing.assert_array_equal(np.asarray(data), np.stack(planes))
    lazy, meta = read_stack(path, memory_limit=10)
    assert meta["storage"] == "lazy"
    np.testing.assert_array_equal(np.asarray(lazy[3]), planes[3])
