"""Multi-process training (torch DDP, gloo on CPU): the replicas stay identical."""

from __future__ import annotations

import json

import pytest
import tifffile
import torch
import torch.distributed as dist
from _train_helpers import blob_stack

from napari_cellgen._progress import run
from napari_cellgen.cli import main
from napari_cellgen.models.store import load_model
from napari_cellgen.models.unet import UNet
from napari_cellgen.train import ddp
from napari_cellgen.train.loop import TrainConfig


def _ddp_stack(n=4, seed=0):
    return blob_stack(n, size=48, seed=seed, radius=6, margin=8)


def test_torch_has_gloo():
    # --nproc runs on gloo, which every CPU build of torch has: without it, fail (a broken install)
    assert dist.is_available() and dist.is_gloo_available()


def test_cli_two_gloo_processes_keep_replicas_identical(tmp_path, capsys):
    img, mask = _ddp_stack()
    tifffile.imwrite(tmp_path / "img.tif", img, photometric="minisblack")
    tifffile.imwrite(tmp_path / "mask.tif", mask, photometric="minisblack")
    out = tmp_path / "ddp-model"
    rc = main(["train", "--images", str(tmp_path / "img.tif"), "--masks", str(tmp_path / "mask.tif"),
               "--model", "scratch", "--base", "4", "--depth", "2", "--scale", "1", "--context", "0",
               "--patch", "32", "--batch", "4", "--steps", "4", "--val-every", "2", "--threads", "1",
               "--nproc", "2", "--quiet", "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    card = json.loads((out / "card.json").read_text())
    info = card["training"]["ddp"]
    assert info["world_size"] == 2 and info["backend"] == "gloo" and info["global_batch"] == 4
    digests = info["replica_digests"]
    assert len(digests) == 2 and digests[0] == digests[1] and info["replicas_in_sync"] is True
    # and the weights did train (they differ from the shared initialisation)
    model, _ = load_model(out)
    torch.manual_seed(0)
    init = UNet(1, 1, base=4, depth=2)
    assert ddp.weights_digest(model) != ddp.weights_digest(init)


def test_torchrun_style_rank_runs_in_this_process(tmp_path, monkeypatch):
    """What each process does under ``torchrun``: RANK/WORLD_SIZE in the environment, env:// init."""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(ddp._free_port()))
    assert ddp.launched_by_torchrun()
    img, mask = _ddp_stack(n=3)
    cfg = TrainConfig(steps=2, scale=1.0, context=0, base=4, depth=2, patch=32, batch=2, val_every=2,
                      tile=64, overlap=16, elastic_p=0.0, threads=1)
    threads = torch.get_num_threads()
    try:
        res = run(ddp.train_job([(img, mask, None)], tmp_path / "m", cfg, nproc=1))
    finally:
        torch.set_num_threads(threads)
    assert res["model_dir"] == tmp_path / "m" and res["card"]["training"]["ddp"]["world_size"] == 1
    assert not dist.is_initialized()


def test_resume_is_refused_with_several_processes(tmp_path):
    with pytest.raises(ValueError, match="--resume is not supported"):
        run(ddp.train_model_ddp([], tmp_path, TrainConfig(), nproc=2, resume=True))


@pytest.mark.parametrize("kw, word", [({"ema": 0.99}, "--ema"), ({"hard_prob": 0.2}, "--hard"),
                                      ({"emphasis": 4.0}, "--corrections")])
def test_ddp_refuses_what_its_loop_does_not_do(tmp_path, kw, word):
    img, mask = _ddp_stack()
    cfg = TrainConfig(steps=2, **kw)
    with pytest.raises(ValueError, match=f"{word}.*not supported with --nproc"):
        run(ddp.train_job([(img, mask, None)], tmp_path / "m", cfg, nproc=2))
    with pytest.raises(ValueError, match="--synthetic.*not supported"):
        run(ddp.train_job([(img, mask, None)], tmp_path / "m", TrainConfig(steps=2), nproc=2,
                          synthetic=(img, mask)))
    assert not (tmp_path / "m").exists()
