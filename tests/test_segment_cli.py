import numpy as np
import pytest
import tifffile

from napari_cellgen import cli
from napari_cellgen.models.store import save_model
from napari_cellgen.models.unet import UNet
from napari_cellgen.segment import pipeline
from napari_cellgen.segment.pipeline import SegmentOptions, segment


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLGEN_USER_DIR", str(tmp_path / "user"))
    card = {"context": 1, "scale": 0.5, "tile": 32, "overlap": 8,
            "normalization": {"kind": "percentile", "low": 1.0, "high": 99.0}}
    save_model(tmp_path / "user" / "models" / "tiny", UNet(3, 1, base=2, depth=2), card)
    pipeline._MODEL_CACHE.clear()
    return "tiny"


@pytest.fixture
def bright_is_foreground(monkeypatch):
    monkeypatch.setattr("napari_cellgen.segment.predict.make_forward",
                        lambda m, device="cpu", tta=1: lambda b: (b[:, 1] > 0.5).astype(np.float32))


def _stack(tmp_path):
    img = np.full((4, 50, 70), 10, np.uint8)
    img[:, 10:30, 10:40] = 220
    img[2:, 38:46, 50:60] = 220
    path = tmp_path / "em.tif"
    tifffile.imwrite(path, img, imagej=True, resolution=(1 / 0.005, 1 / 0.005),
                     metadata={"spacing": 0.005, "unit": "um", "axes": "ZYX"})
    return path, img


def test_cli_segment_writes_labels_and_csv(tmp_path, tiny, bright_is_foreground, capsys):
    path, img = _stack(tmp_path)
    out, csv = tmp_path / "labels.tif", tmp_path / "objects.csv"
    rc = cli.main(["segment", str(path), "-o", str(out), "--csv", str(csv), "--model", tiny,
                   "--min-size", "5", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    lab = tifffile.imread(out)
    assert lab.shape == img.shape and lab.dtype == np.uint16
    assert len(np.unique(lab)) == 3  # background + 2 objects, one id each through z
    assert len(np.unique(lab[:, 20, 20])) == 1
    rows = csv.read_text().splitlines()
    assert len(rows) == 3 and "volume_nm3" in rows[0]
    # 2D mode: objects per slice
    rc = cli.main(["segment", str(path), "-o", str(out), "--model", tiny, "--2d", "--min-size", "5", "--quiet"])
    assert rc == 0 and len(np.unique(tifffile.imread(out))) == 1 + 4 + 2


def test_streamed_path_matches_in_memory(tmp_path, tiny, bright_is_foreground, monkeypatch):
    path, img = _stack(tmp_path)
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    assert cli.main(["segment", str(path), "-o", str(a), "--model", tiny, "--quiet"]) == 0
    monkeypatch.setattr("napari_cellgen.commands.segment.IN_MEMORY_VOXELS", 10)
    assert cli.main(["segment", str(path), "-o", str(b), "--model", tiny, "--quiet"]) == 0
    np.testing.assert_array_equal(tifffile.imread(a), tifffile.imread(b))
    assert not list(tmp_path.glob(".cellgen-*"))  # temporary files cleaned up


@pytest.mark.parametrize(
    "data, message",
    [
        (np.zeros((2, 3, 8, 8, 2), np.uint8), "shape"),
        (np.zeros((0, 8, 8), np.uint8), "empty"),
        (np.full((8, 8), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_arrays_give_clear_errors(tiny, data, message):
    with pytest.raises(ValueError, match=message):
        segment(data, SegmentOptions(model=tiny))


def test_cli_bad_inputs_exit_2(tmp_path, tiny, capsys):
    path, _ = _stack(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    bad_model = tmp_path / "bad_model"
    bad_model.mkdir()
    (bad_model / "card.json").write_text(
        '{"architecture": {"in_channels": 1, "out_channels": 1, "base": 2, "depth": 2}}')
    (bad_model / "model.safetensors").write_bytes(b"not a tensor file")
    cases = [
        (["segment", str(tmp_path / "missing.tif"), "-o", str(tmp_path / "x.tif")], "does not exist"),
        (["segment", str(tmp_path / "notes.txt"), "-o", str(tmp_path / "x.tif")], "notes.txt"),
        (["segment", str(path), "-o", str(tmp_path / "nodir" / "x.tif")], "does not exist"),
        (["segment", str(path), "-o", str(tmp_path / "x.tif"), "--model", "nope"], "No model called"),
        (["segment", str(path), "-o", str(tmp_path / "x.tif"), "--model", str(bad_model)], "safetensors"),
        (["segment", str(path), "-o", str(tmp_path / "x.tif"), "--threshold", "2"], "threshold"),
        (["segment", str(path), "-o", str(tmp_path / "x.tif"), "--device", "tpu"], "device"),
    ]
    for argv, msg in cases:
        assert cli.main(argv + ["--quiet"]) == 2, argv
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "x.tif").exists()


def test_tta_views_average_the_model_over_rotations():
    import torch

    from napari_cellgen.segment.predict import make_forward, tta_views

    assert [tta_views(v) for v in (1, 2, 4, "2", True, False, None)] == [1, 2, 4, 2, 4, 1, 1]
    for bad in (3, 0, 2.5, float("inf"), "two", "nan"):
        with pytest.raises(ValueError, match="1, 2 or 4 views"):
            tta_views(bad)
    torch.manual_seed(0)
    net = UNet(3, 1, base=2, depth=2).eval()
    x = np.random.default_rng(0).random((2, 3, 16, 24)).astype(np.float32)
    with torch.inference_mode():
        t = torch.from_numpy(x)
        plain, rot = net(t), net(t.flip((-2, -1))).flip((-2, -1))
    expect2 = torch.sigmoid((plain + rot) / 2)[:, 0].numpy()
    np.testing.assert_allclose(make_forward(net, tta=2)(x), expect2, atol=1e-6)
    np.testing.assert_allclose(make_forward(net, tta=1)(x), torch.sigmoid(plain)[:, 0].numpy(), atol=1e-6)
    assert not np.allclose(make_forward(net, tta=1)(x), expect2, atol=1e-6)  # the rotation does count


def test_bad_tta_is_refused_before_any_work(tmp_path, tiny, capsys):
    with pytest.raises(ValueError, match="1, 2 or 4 views"):
        segment(np.zeros((20, 20), np.float32), SegmentOptions(model=tiny, tta=3))
    path, _ = _stack(tmp_path)
    with pytest.raises(SystemExit) as exc:
        cli.main(["segment", str(path), "-o", str(tmp_path / "l.tif"), "--views", "3"])
    assert exc.value.code == 2 and "--views" in capsys.readouterr().err


def test_old_option_spellings_still_work(tmp_path, tiny, bright_is_foreground):
    """--tta and --batch-size (before --views and --batch) are hidden aliases for a release."""
    path, _ = _stack(tmp_path)
    new, old = tmp_path / "new.tif", tmp_path / "old.tif"
    assert cli.main(["segment", str(path), "-o", str(new), "--model", tiny, "--views", "1", "--batch", "2",
                     "--tile", "64", "--quiet"]) == 0
    assert cli.main(["segment", str(path), "-o", str(old), "--model", tiny, "--tta", "1", "--batch-size", "2",
                     "--tile", "64", "--quiet"]) == 0
    np.testing.assert_array_equal(tifffile.imread(new), tifffile.imread(old))
