"""The promises of docs/reliability.md, one test each: atomic outputs, cleanup after signals and
kills, labels that reopen as labels, names that cannot be hijacked, one line for every failure."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import types
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_cellgen import _paths, cli
from napari_cellgen.io import read_stack
from napari_cellgen.io.reader import layer_data
from napari_cellgen.models import store
from napari_cellgen.models.unet import UNet
from napari_cellgen.segment import pipeline


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A registered 2-feature model whose forward pass is 'bright = foreground' (fast, exact)."""
    card = {"context": 1, "scale": 0.5, "tile": 32, "overlap": 8,
            "normalization": {"kind": "percentile", "low": 1.0, "high": 99.0}}
    store.save_model(store.user_dir() / "tiny", UNet(3, 1, base=2, depth=2), card)
    pipeline._MODEL_CACHE.clear()
    monkeypatch.setattr("napari_cellgen.segment.predict.make_forward",
                        lambda m, device="cpu", tta=1: lambda b: (b[:, 1] > 0.5).astype(np.float32))
    return "tiny"


def _stack(path: Path) -> Path:
    img = np.full((4, 48, 48), 10, np.uint8)
    img[:, 8:30, 8:30] = 220
    tifffile.imwrite(path, img, photometric="minisblack")
    return path


def _dead_pid() -> int:
    pid = 4_000_000  # above the usual pid_max, so never a live process
    while _paths.pid_alive(pid):
        pid += 1
    return pid


# --------------------------------------------------------------------------- labels flag (issue 17, item 4)
def test_segment_tiff_labels_reopen_as_labels(tmp_path, tiny):
    out = tmp_path / "labels.tif"
    assert cli.main(["segment", str(_stack(tmp_path / "em.tif")), "-o", str(out), "--model", tiny,
                     "--min-size", "5", "--quiet"]) == 0
    data, meta = read_stack(out)
    assert meta["layer_type"] == "labels" and layer_data(data, meta)[2] == "labels"
    assert data.max() >= 1


def test_blockwise_tiff_labels_reopen_as_labels(tmp_path, tiny, monkeypatch):
    """The dask path converts its zarr to TIFF; the labels flag must survive that too."""
    from napari_cellgen.io.zarr_io import write_zarr

    def fake_blockwise(src, labels_out, opts, cb, **kw):
        write_zarr(labels_out, np.ones((4, 48, 48), np.uint32), labels=True)
        return types.SimpleNamespace(n_objects=1, table=None, blocks=[0], card={"name": "tiny"}, message="")

    monkeypatch.setattr("napari_cellgen.segment.blockwise.segment_blockwise", fake_blockwise)
    monkeypatch.setattr("napari_cellgen.segment.cluster.dask_client",
                        lambda *a, **k: contextlib.nullcontext(None))
    out = tmp_path / "labels.tif"
    assert cli.main(["segment", str(_stack(tmp_path / "em.tif")), "-o", str(out), "--model", tiny,
                     "--workers", "1", "--quiet"]) == 0
    assert read_stack(out)[1]["layer_type"] == "labels"
    assert not list(tmp_path.glob(".*"))


# --------------------------------------------------------------------------- reading (item 3)
def test_planar_rgb_grey_stack_is_read_as_slices(tmp_path):
    import warnings

    stack = np.random.default_rng(0).integers(0, 255, (3, 32, 40), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tifffile.imwrite(tmp_path / "g.tif", stack)  # tifffile's default: planar RGB
    data, meta = read_stack(tmp_path / "g.tif")
    np.testing.assert_array_equal(np.asarray(data), stack)
    assert meta["axes"] == "ZYX" and any("planar RGB" in w for w in meta["warnings"])
    rgb = np.zeros((32, 40, 3), np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb)  # a real colour image is still converted
    data, meta = read_stack(tmp_path / "rgb.tif")
    assert data.shape == (32, 40) and any("grayscale" in w for w in meta["warnings"])


def test_segment_prints_the_readers_warnings(tmp_path, tiny, capsys):
    rgb = np.zeros((48, 48, 3), np.uint8)
    rgb[8:30, 8:30] = 220
    tifffile.imwrite(tmp_path / "rgb.tif", rgb)
    assert cli.main(["segment", str(tmp_path / "rgb.tif"), "-o", str(tmp_path / "l.tif"), "--model", tiny,
                     "--quiet"]) == 0
    assert "converted to grayscale" in capsys.readouterr().err


# --------------------------------------------------------------------------- temporary files (item 8)
def test_stale_temp_folders_of_dead_processes_are_removed(tmp_path, tiny):
    dead = _dead_pid()
    stale = tmp_path / f".cellgen-{dead}-xxx"
    stale_here = tmp_path / f".cellgen-{dead}-{_paths.host()}-abcdefgh"
    alive = tmp_path / f".cellgen-{os.getpid()}-{_paths.host()}-abcdefgh"
    other_host = tmp_path / f".cellgen-{dead}-elsewhere-abcdefgh"
    partial = tmp_path / f".labels.zarr.partial-{dead}-{_paths.host()}-abcd1234"
    tmpfile = tmp_path / f".labels.tif.tmp-{dead}-{_paths.host()}-abcdefgh"
    for d in (stale, stale_here, alive, other_host, partial):
        d.mkdir()
        (d / "prob.raw").write_bytes(b"\0" * 100)
    tmpfile.write_bytes(b"half a tiff")
    user_file = tmp_path / ".cellgen-notes"
    user_file.write_text("not ours")
    assert cli.main(["segment", str(_stack(tmp_path / "em.tif")), "-o", str(tmp_path / "l.tif"),
                     "--model", tiny, "--quiet"]) == 0
    assert not stale.exists() and not stale_here.exists() and not partial.exists() and not tmpfile.exists()
    assert alive.exists() and other_host.exists() and user_file.exists()


def test_temp_folder_names_carry_the_pid(tmp_path):
    with _paths.temp_dir(tmp_path) as tmp:
        m = _paths._STALE.match(Path(tmp).name)
        assert m and int(m["pid"]) == os.getpid() and m["host"] == _paths.host()
    assert not list(tmp_path.iterdir())


def test_sigterm_during_segment_removes_the_temporary_files(tmp_path, tiny, monkeypatch, capsys):
    monkeypatch.setattr("napari_cellgen.commands.segment.IN_MEMORY_VOXELS", 10)  # stream through raw files
    seen = {}

    def killed(image, opts, callback=None, **kw):
        seen["raw"] = [p for p in tmp_path.glob(".cellgen-*/*.raw")]
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):  # the handler runs at the next bytecode
            pass
        raise AssertionError("SIGTERM did not stop the job")

    monkeypatch.setattr("napari_cellgen.segment.pipeline.segment", killed)
    before = signal.getsignal(signal.SIGTERM)
    rc = cli.main(["segment", str(_stack(tmp_path / "em.tif")), "-o", str(tmp_path / "l.tif"),
                   "--model", tiny, "--quiet"])
    assert rc == 143 and "terminated" in capsys.readouterr().err
    assert len(seen["raw"]) == 2  # the raw buffers existed ...
    assert not list(tmp_path.glob(".cellgen-*")) and not (tmp_path / "l.tif").exists()  # ... and are gone
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is put back


def test_zarr_writer_leaves_nothing_when_creation_fails(tmp_path, monkeypatch):
    import zarr

    from napari_cellgen.io.zarr_io import ZarrWriter

    def broken(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(zarr.Group, "create_array", broken)
    with pytest.raises(OSError):
        ZarrWriter(tmp_path / "l.zarr", (2, 8, 8), np.uint32)
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- atomic writes (items 7, 11)
def _state(base=4):
    model = UNet(1, 1, base=base, depth=2)
    return model, torch.optim.AdamW(model.parameters())


def test_checkpoint_is_written_as_one_unit(tmp_path, monkeypatch):
    from napari_cellgen.train import checkpoint

    last = tmp_path / "last"
    model, opt = _state()
    checkpoint.save_training_state(last, model, opt, {}, {"step": 1}, ema=model)
    assert sorted(p.name for p in last.iterdir()) == ["card.json", "ema.safetensors", "model.safetensors",
                                                      "optimizer.safetensors", "state.json"]
    calls = {"n": 0}
    real = checkpoint.save_tensors

    def crash_on_second(path, tensors):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, tensors)

    monkeypatch.setattr(checkpoint, "save_tensors", crash_on_second)
    with pytest.raises(OSError):
        checkpoint.save_training_state(last, model, opt, {}, {"step": 2})
    assert checkpoint.check_training_state(last)["step"] == 1  # the old checkpoint, whole
    assert [p.name for p in tmp_path.iterdir()] == ["last"]  # no stray temporary folder or .tmp file


def test_mixed_or_foreign_checkpoints_are_refused(tmp_path):
    from napari_cellgen.train import checkpoint

    model, opt = _state()
    checkpoint.save_training_state(tmp_path / "last", model, opt, {}, {"step": 3})
    assert checkpoint.load_training_state(tmp_path / "last", *_state())["step"] == 3
    with pytest.raises(checkpoint.CheckpointError, match="another architecture"):
        checkpoint.load_training_state(tmp_path / "last", *_state(base=8))
    store.save_tensors(tmp_path / "last" / "optimizer.safetensors", {"x": torch.zeros(1)})  # from another step
    with pytest.raises(checkpoint.CheckpointError, match="does not belong"):
        checkpoint.check_training_state(tmp_path / "last")


def test_an_interrupted_folder_swap_is_undone(tmp_path):
    """Killed between 'move the old last/ aside' and 'rename the new one in': the old one comes back."""
    target = tmp_path / "last"
    target.mkdir()
    (target / "state.json").write_text("{}")
    aside = tmp_path / f".last.old-{_dead_pid()}-{_paths.host()}-abcdefgh"
    os.replace(target, aside)
    half = tmp_path / f".last.new-{_dead_pid()}-{_paths.host()}-abcdefgh"
    half.mkdir()
    _paths.remove_stale(tmp_path)
    assert (target / "state.json").is_file() and not aside.exists() and not half.exists()


def test_write_tiff_fsyncs_before_the_rename(tmp_path, monkeypatch):
    from napari_cellgen.io import tiff

    order = []
    monkeypatch.setattr(_paths, "fsync_file", lambda p: order.append(("fsync", Path(p).name)))
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (order.append(("rename", Path(b).name)), real_replace(a, b)))
    tiff.write_tiff(tmp_path / "x.tif", np.zeros((4, 4), np.uint8))
    assert [k for k, _ in order] == ["fsync", "rename"] and order[-1][1] == "x.tif"
    assert [p.name for p in tmp_path.iterdir()] == ["x.tif"]


# --------------------------------------------------------------------------- trust (item 10, 11)
def test_a_folder_in_the_working_directory_never_replaces_the_shipped_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake = tmp_path / "mito-unet"
    store.save_model(fake, UNet(1, 1, base=2, depth=2), {"context": 0})
    assert store.resolve(None) == store.bundled_dir() / "mito-unet"
    assert store.resolve("mito-unet") == store.bundled_dir() / "mito-unet"
    assert store.resolve("./mito-unet").resolve() == fake.resolve()  # as a path it is used
    with pytest.raises(store.ModelError, match="reserved"):
        store.register_model(fake, "mito-unet")
    store.save_model(store.user_dir() / "mito-unet", UNet(1, 1, base=2, depth=2), {"context": 0})  # by hand
    assert store.list_models()["mito-unet"] == store.bundled_dir() / "mito-unet"


def test_shipped_generator_names_are_reserved(tmp_path, monkeypatch):
    from napari_cellgen.generate import store as gstore

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mito-gen").mkdir()
    assert gstore.resolve_generator("mito-gen") == gstore.bundled_generators_dir() / "mito-gen"
    with pytest.raises(store.ModelError, match="reserved"):
        gstore.register_generator(gstore.bundled_generators_dir() / "mito-gen", "mito-gen")


@pytest.mark.parametrize("name", ["../../x", "/etc/x", "a/../../b", "..", ""])
def test_run_names_stay_in_the_runs_folder(name):
    from napari_cellgen.train.loop import default_run_dir

    runs = (store.user_dir().parent / "training-runs").resolve()
    path = default_run_dir(name).resolve()
    assert path.parent == runs


def test_resume_summary_never_prints_nan(tmp_path):
    from napari_cellgen.commands.train import _summary

    assert _summary({"metrics": {"val_iou": 0.5, "step": 4}}, tmp_path) == "validation IoU 0.5000 at step 4"
    assert "nan" not in _summary({"metrics": {"val_iou": float("nan"), "step": 4}}, tmp_path)
    (tmp_path / "card.json").write_text(json.dumps({"metrics": {"val_iou": 0.7, "step": 9}}))
    assert _summary({}, tmp_path) == "validation IoU 0.7000 at step 9"  # nothing trained: the kept model


# --------------------------------------------------------------------------- one line for every failure (item 9)
@pytest.mark.parametrize("exc, code, text", [
    (OSError(errno.ENOSPC, "No space left on device", "/data/l.tif"), 2, "the disk is full writing /data/l.tif"),
    (OSError(errno.EROFS, "Read-only file system"), 2, "read-only"),
    (MemoryError(), 2, "not enough memory"),
    (RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), 2, "ran out of memory"),
    (ZeroDivisionError("division by zero"), 1, "internal error: ZeroDivisionError"),
    (RuntimeError("something else"), 1, "full report"),
])
def test_every_failure_is_one_line(tmp_path, monkeypatch, capsys, exc, code, text):
    def boom(args):
        raise exc

    monkeypatch.setattr("napari_cellgen.commands.info.run", boom)
    assert cli.main(["info"]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and text in err and "Traceback" not in err
    if code == 1:
        report = Path(err.split("full report: ")[1].split(" (please")[0])
        assert "Traceback" in report.read_text() and type(exc).__name__ in report.read_text()


# --------------------------------------------------------------------------- no pickle, no network
def test_no_pickle_anywhere():
    """Model, checkpoint and data files are read without unpickling: a file can never run code."""
    import re

    src = Path(__file__).resolve().parents[1] / "src" / "napari_cellgen"
    bad = []
    for path in src.rglob("*.py"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if (re.search(r"\bimport pickle\b|\bpickle\.loads?\(|allow_pickle\s*=\s*True", code)
                    or ("torch.load(" in code and "weights_only=True" not in code)):
                bad.append(f"{path.name}:{i}: {line.strip()}")
    assert not bad, bad


def test_segment_runs_offline(tmp_path, tiny, monkeypatch):
    """No connection is opened (the dask options --scheduler/--workers are the only exception)."""
    import socket

    def refuse(*a, **k):
        raise AssertionError("network access")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    assert cli.main(["segment", str(_stack(tmp_path / "em.tif")), "-o", str(tmp_path / "l.tif"),
                     "--model", tiny, "--csv", str(tmp_path / "o.csv"), "--quiet"]) == 0


def test_sigterm_during_training_keeps_a_resumable_checkpoint(tmp_path, monkeypatch, capsys):
    from _train_helpers import blob_stack

    from napari_cellgen import _progress
    from napari_cellgen.train.checkpoint import check_training_state

    img, mask = blob_stack()
    tifffile.imwrite(tmp_path / "img.tif", img, photometric="minisblack")
    tifffile.imwrite(tmp_path / "mask.tif", mask, photometric="minisblack")
    real_run = _progress.run

    def drive(job, cb):
        def killed(p):
            cb(p)
            if p.stage == "train" and p.done == 2:
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(100):
                    pass
        return real_run(job, killed)

    monkeypatch.setattr(_progress, "run", drive)
    out = tmp_path / "run"
    rc = cli.main(["train", "--images", str(tmp_path / "img.tif"), "--masks", str(tmp_path / "mask.tif"),
                   "--steps", "6", "--model", "scratch", "--base", "4", "--depth", "2", "--scale", "1",
                   "--context", "0", "--patch", "32", "--batch", "2", "--threads", "1", "--quiet",
                   "--no-register", "-o", str(out)])
    assert rc == 143 and "--resume" in capsys.readouterr().err
    assert check_training_state(out / "last")["step"] == 2 and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["card.json", "last", "model.safetensors"]
