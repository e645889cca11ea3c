"""bioimage.io packages: `cellgen export` writes one that bioimage.io's own validator accepts, and
`cellgen segment --model NAME.zip` runs it with the same labels; foreign packages are refused."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import yaml

from napari_cellgen import cli
from napari_cellgen._sample_data import SAMPLE_IMAGE
from napari_cellgen.io import read_stack, write_tiff
from napari_cellgen.models import bioimageio as bio
from napari_cellgen.models.store import load_model
from napari_cellgen.segment import pipeline


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """The shipped model exported once for the module (small 64 px test tensors keep it quick)."""
    out = tmp_path_factory.mktemp("export") / "mito-unet.zip"
    assert cli.main(["export", "mito-unet", "-o", str(out), "--test-size", "64"]) == 0
    return out


@pytest.fixture
def no_network(monkeypatch):
    """Any HTTP request fails the test's expectations: it is recorded and refused, nothing downloads."""
    import httpx
    calls = []

    def refuse(method, url=None, *args, **kwargs):
        calls.append((method, str(url)))
        raise httpx.ConnectError("network disabled in tests")

    monkeypatch.setattr(httpx, "request", refuse)
    monkeypatch.setattr(httpx, "stream", refuse)
    return calls


def _rdf(path) -> dict:
    with zipfile.ZipFile(path) as zf:
        return yaml.safe_load(zf.read("rdf.yaml"))


def test_package_describes_the_model(package):
    rdf = _rdf(package)
    with zipfile.ZipFile(package) as zf:
        names = set(zf.namelist())
        x = np.load(io.BytesIO(zf.read("test_input.npy")))
        y = np.load(io.BytesIO(zf.read("test_output.npy")))
        card = json.loads(zf.read(bio.CARD_FILE))
        import imageio.v3 as iio

        cover = iio.imread(zf.read("cover.png"), extension=".png")
    assert {"rdf.yaml", "weights.pt", "unet.py", "README.md", "cover.png", "weights.torchscript.pt"} <= names
    assert rdf["format_version"].startswith("0.5") and rdf["license"] == "BSD-3-Clause"
    assert any("Lucchi" in c["text"] and "Medical Imaging 31(2)" in c["text"] for c in rdf["cite"])
    k = card["context"]
    inp = rdf["inputs"][0]
    assert [a.get("type") for a in inp["axes"]] == ["batch", "channel", "space", "space"]
    assert [a.get("id") for a in inp["axes"][2:]] == ["y", "x"]
    channel = inp["axes"][1]
    assert len(channel["channel_names"]) == 2 * k + 1 == card["architecture"]["in_channels"]
    assert "neighbouring" in channel["description"]
    assert inp["axes"][2]["scale"] == pytest.approx(5.0 / card["scale"])  # Lucchi 5 nm at half resolution
    pre = inp["preprocessing"][0]
    assert pre["id"] == "scale_range" and pre["kwargs"]["axes"] == ["y", "x"]
    assert (pre["kwargs"]["min_percentile"], pre["kwargs"]["max_percentile"]) == (
        card["normalization"]["low"], card["normalization"]["high"])
    assert rdf["outputs"][0]["postprocessing"] == [{"id": "sigmoid"}]
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["callable"] == "UNet"
    assert x.shape == (1, 2 * k + 1, 64, 64) and y.shape == (1, 1, 64, 64)
    assert y.min() >= 0 and y.max() <= 1 and y.max() > 0.5  # the sample crop has mitochondria in view
    assert cover.shape[1] == 2 * cover.shape[0]


def test_bioimageio_spec_validates_it_offline(package, no_network):
    import bioimageio.spec as spec
    rdf = _rdf(package)
    urls = {c["url"]: None for c in rdf["cite"] if c.get("url")}
    # io checks on: every file's sha256 in the zip is verified; the cited URLs are declared known
    descr = spec.load_description(package, perform_io_checks=True, known_files=urls)
    summary = descr.validation_summary
    assert summary.status in ("valid-format", "passed"), summary.format()
    assert type(descr).__name__ == "ModelDescr"
    assert no_network == []


def test_bioimageio_core_reproduces_the_test_output(package, no_network):
    import bioimageio.core as core
    summary = core.test_model(package, weight_format="pytorch_state_dict")
    assert summary.status == "passed", summary.format()


def test_segment_with_the_package_gives_the_same_labels(package, tmp_path):
    stack, meta = read_stack(SAMPLE_IMAGE)
    img = tmp_path / "crop.tif"
    write_tiff(img, np.asarray(stack)[:4, :160, 128:320], meta.get("pixel_size_nm"))  # 13 % mitochondria
    pipeline._MODEL_CACHE.clear()
    assert cli.main(["segment", str(img), "-o", str(tmp_path / "a.tif"), "--quiet"]) == 0
    assert cli.main(["segment", str(img), "-o", str(tmp_path / "b.tif"), "--quiet", "--model", str(package)]) == 0
    a, _ = read_stack(tmp_path / "a.tif")
    b, _ = read_stack(tmp_path / "b.tif")
    assert np.asarray(a).max() > 0
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_load_package_round_trip(package):
    m0, c0 = load_model("mito-unet")
    m1, c1 = load_model(package)  # a Path: the store's .zip branch
    s0, s1 = m0.state_dict(), m1.state_dict()
    assert s0.keys() == s1.keys() and all((s0[k] == s1[k]).all() for k in s0)
    assert c1["architecture"] == c0["architecture"] and c1["path"] == str(package)
    assert c1["name"] == "mito-unet"


def _zip(path, files: dict) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return str(path)


def test_foreign_packages_are_refused_in_one_line(tmp_path, capsys):
    img = tmp_path / "img.tif"
    write_tiff(img, np.zeros((4, 64, 64), np.uint8), None)
    foreign = _zip(tmp_path / "other.zip", {"rdf.yaml": yaml.safe_dump(
        {"type": "model", "format_version": "0.5.4", "name": "someone else's model",
         "weights": {"pytorch_state_dict": {"source": "w.pt"}}})})
    not_a_package = _zip(tmp_path / "plain.zip", {"notes.txt": "hello"})
    for bad in (foreign, not_a_package):
        capsys.readouterr()
        assert cli.main(["segment", str(img), "-o", str(tmp_path / "out.tif"), "--model", bad, "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "cellgen export" in err, err
    assert not (tmp_path / "out.tif").exists()


def test_tampered_weights_are_refused(package, tmp_path):
    bad = tmp_path / "tampered.zip"
    with zipfile.ZipFile(package) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            dst.writestr(info.filename, data[:-8] + b"\0" * 8 if info.filename == "weights.pt" else data)
    with pytest.raises(ValueError, match="sha256"):
        load_model(bad)


def test_export_refuses_to_overwrite_without_force(package, tmp_path, capsys):
    out = tmp_path / "x.zip"
    out.write_bytes(b"keep me")
    assert cli.main(["export", "-o", str(out)]) == 2
    assert out.read_bytes() == b"keep me"
    assert cli.main(["export", "-o", str(tmp_path / "x.tar")]) == 2
    assert "zip" in capsys.readouterr().err
