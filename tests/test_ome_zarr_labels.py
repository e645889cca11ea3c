"""Labels into an OME-Zarr image container: `cellgen segment IMG.ome.zarr -o IMG.ome.zarr/labels/NAME`
adds NGFF labels beside the image (image bytes untouched) and napari-ome-zarr opens them."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from napari_cellgen import cli
from napari_cellgen._sample_data import SAMPLE_IMAGE
from napari_cellgen.io import read_stack
from napari_cellgen.io.ome_labels import labels_container, write_labels
from napari_cellgen.io.zarr_io import ZarrWriter, write_zarr
from napari_cellgen.segment import pipeline


def _digest(root, skip_labels=True) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not (skip_labels and p.relative_to(root).parts[0] == "labels")
    }


@pytest.fixture
def em_zarr(tmp_path):
    """4 x 160 x 192 of the sample crop (with mitochondria) as the project's own OME-Zarr (NGFF 0.4)."""
    stack = np.asarray(read_stack(SAMPLE_IMAGE)[0])[:4, :160, 128:320]
    path = tmp_path / "em.ome.zarr"
    write_zarr(path, stack, pixel_size=(5.0, 5.0, 5.0))
    return path, stack


def _reader_layers(path):
    from napari_ome_zarr._reader import napari_get_reader

    reader = napari_get_reader(str(path))
    assert reader is not None
    return reader(str(path))


def test_segment_into_the_container(em_zarr, tmp_path, capsys):
    path, stack = em_zarr
    before = _digest(path)
    pipeline._MODEL_CACHE.clear()
    rc = cli.main(["segment", str(path), "-o", str(path / "labels" / "mito"), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert _digest(path) == before  # the image (arrays and metadata) is byte for byte the same
    assert sorted(p.name for p in path.iterdir()) == [".zattrs", ".zgroup", "0", "labels"]  # no temp folder left
    assert json.loads((path / "labels" / ".zattrs").read_text())["labels"] == ["mito"]
    attrs = json.loads((path / "labels" / "mito" / ".zattrs").read_text())
    image_attrs = json.loads((path / ".zattrs").read_text())
    ms, ims = attrs["multiscales"][0], image_attrs["multiscales"][0]
    assert ms["axes"] == ims["axes"]
    assert [d["coordinateTransformations"] for d in ms["datasets"]] == [
        d["coordinateTransformations"] for d in ims["datasets"]]
    label = attrs["image-label"]
    assert label["version"] == "0.4" and label["source"] == {"image": "../../"}

    # the same labels as segmenting the image into a TIFF
    assert cli.main(["segment", str(path), "-o", str(tmp_path / "ref.tif"), "--quiet"]) == 0
    ref = np.asarray(read_stack(tmp_path / "ref.tif")[0])
    import zarr

    got = zarr.open_array(str(path / "labels" / "mito" / "0"), mode="r")[:]
    assert ref.max() > 0 and got.shape == stack.shape
    np.testing.assert_array_equal(got, ref)
    assert sorted(c["label-value"] for c in label["colors"]) == sorted(set(np.unique(ref)) - {0})

    # napari-ome-zarr opens the image and its labels from the container
    layers = _reader_layers(path)
    kinds = [t for _, _, t in layers]
    assert kinds.count("image") == 1 and kinds.count("labels") == 1
    data, kwargs, _ = next(x for x in layers if x[2] == "labels")
    np.testing.assert_array_equal(np.asarray(data[0]), ref)
    assert list(kwargs["scale"])[-3:] == [5.0, 5.0, 5.0]
    import napari

    layer = napari.layers.Labels(data, **{k: v for k, v in kwargs.items() if k in ("colormap", "scale", "name")})
    assert tuple(layer.level_shapes[0]) == stack.shape

    # again: replaced in place, still listed once; a second name is added beside it
    assert cli.main(["segment", str(path), "-o", str(path / "labels" / "mito"), "--quiet", "--views", "1"]) == 0
    write_labels(path / "labels" / "edited", (ref > 0).astype(np.uint8))
    assert json.loads((path / "labels" / ".zattrs").read_text())["labels"] == ["mito", "edited"]
    assert not [p for p in (path / "labels").iterdir() if p.name.startswith(".") and "partial" in p.name]
    assert _digest(path) == before


def test_pyramid_and_ngff_05_image(tmp_path):
    """An image written by ome-zarr (NGFF 0.5, zarr v3, c axis, 3 levels): one label level per image level."""
    import zarr
    from ome_zarr.writer import write_image

    img = np.zeros((1, 3, 64, 96), np.uint8)
    img[0, :, 10:30, 20:60] = 200
    path = tmp_path / "img.ome.zarr"
    write_image(img, zarr.open_group(str(path), mode="w"), axes="czyx", scale_factors=[{"y": 2, "x": 2}] * 2)
    before = _digest(path)
    labels = (img[0] > 0).astype(np.uint32)
    assert labels_container(path / "labels" / "cells") == path
    write_labels(path / "labels" / "cells", labels)
    assert _digest(path) == before
    group = zarr.open_group(str(path), mode="r")
    ome = dict(group["labels"]["cells"].attrs)["ome"]
    assert dict(group["labels"].attrs)["ome"]["labels"] == ["cells"]
    image_levels = [group[d["path"]].shape for d in dict(group.attrs)["ome"]["multiscales"][0]["datasets"]]
    label_levels = [group["labels"]["cells"][d["path"]].shape for d in ome["multiscales"][0]["datasets"]]
    assert label_levels == image_levels and label_levels[0] == (1, 3, 64, 96)
    np.testing.assert_array_equal(group["labels"]["cells"]["0"][0], labels)
    np.testing.assert_array_equal(group["labels"]["cells"]["1"][0], labels[:, ::2, ::2])
    data, _, kind = next(x for x in _reader_layers(path) if x[2] == "labels")
    assert kind == "labels" and len(data) == len(image_levels)


def test_refusals(em_zarr, tmp_path, capsys):
    path, stack = em_zarr
    before = _digest(path, skip_labels=False)
    other = tmp_path / "other.ome.zarr"
    write_zarr(other, stack[:, :64, :64], pixel_size=(5.0, 5.0, 5.0))
    (path / "labels").mkdir()
    (path / "labels" / "notes").mkdir()  # not a label image: never replaced
    cases = [
        [str(other), "-o", str(path / "labels" / "mito")],  # another image's shape
        [str(path), "-o", str(path / "labels" / "notes")],
        [str(path), "-o", str(path / "labels" / ".hidden")],
        [str(path), "-o", str(path / "elsewhere" / "mito")],  # inside the input, not labels/
    ]
    for argv in cases:
        capsys.readouterr()
        assert cli.main(["segment", *argv, "--quiet"]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
    assert _digest(path, skip_labels=False) == before


def test_zarr_writer_leaves_no_partial_folder_when_creation_fails(tmp_path):
    with pytest.raises((TypeError, ValueError)):
        ZarrWriter(tmp_path / "out.zarr", (4, 8, 8), "not-a-dtype")
    assert list(tmp_path.iterdir()) == []
