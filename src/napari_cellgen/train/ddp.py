"""Multi-process training with torch.distributed DistributedDataParallel (gloo on CPU, NCCL on GPUs).

Two ways to start it, both through :func:`train_model_ddp` (the same return value as
:func:`~.loop.train_model`):

* ``cellgen train ... --nproc N`` spawns N processes on this machine (one per GPU, or N CPU
  processes sharing the cores);
* ``torchrun --nnodes M --nproc-per-node N -m napari_cellgen.cli train ...`` (any number of
  nodes): every process finds ``RANK``/``WORLD_SIZE`` in its environment and runs one rank.

Every rank builds the same model from the same seed (DDP also broadcasts rank 0's weights at
start), samples its own patches (seed + rank), and the gradients are averaged across ranks at
each step, so all replicas hold identical weights; ``cfg.batch`` is the *global* batch, split
across the ranks. Rank 0 validates and writes the checkpoints. At the end every rank hashes
its weights and the card records whether the replicas were in sync.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import socket
import time
from collections.abc import Generator, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .._progress import Progress


def launched_by_torchrun() -> bool:
    """True inside a process started by torchrun (or another launcher setting RANK/WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def weights_digest(model) -> str:
    """sha256 of every parameter and buffer, in state_dict order (equal digests = equal weights)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _rank_train(rank: int, world: int, pairs, out_dir: str, cfg, device: str, backend: str,
                init_method: str, queue=None, local_rank: int | None = None):
    """One rank's training loop. Rank 0 sends Progress (and finally the card) to ``queue``."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from ..models.store import save_model
    from .augment import augment
    from .data import PatchSampler
    from .loop import _init_model, _logits, _loss, _lr_factor, _selection, evaluate, prepare_regions

    local_rank = rank if local_rank is None else local_rank
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    else:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // local_world))
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world)
    try:
        per_rank = max(1, cfg.batch // world)
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        model, card = _init_model(cfg)
        train_regions, val_regions = prepare_regions(pairs, card, None, cfg.val_fraction)
        sampler = PatchSampler(train_regions, cfg.patch, cfg.fg_prob, cfg.seed + 1000 * rank)
        gen = torch.Generator().manual_seed(cfg.seed + 1000 * rank)
        model.to(device).train()
        ddp = DDP(model, device_ids=[local_rank] if device.startswith("cuda") else None)
        opt = torch.optim.AdamW(ddp.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        card.update(
            architecture=model.config,
            name=cfg.name or Path(out_dir).name,
            training={
                "config": {k: v for k, v in asdict(cfg).items() if k != "notes"},
                "train_slices": len(train_regions),
                "val_regions": len(val_regions),
                "ddp": {"world_size": world, "backend": backend, "batch_per_process": per_rank,
                        "global_batch": per_rank * world},
                **cfg.notes,
            },
        )
        select = _selection(cfg, val_regions)
        card["training"]["selection"] = select
        best, history, t0 = -1.0, [], time.perf_counter()
        best_written = False
        for step in range(1, cfg.steps + 1):
            for group in opt.param_groups:
                group["lr"] = cfg.lr * _lr_factor(step - 1, cfg.steps, cfg.warmup)
            x, y = sampler.sample(per_rank)
            x, y = augment(torch.from_numpy(x), torch.from_numpy(y), gen, elastic_p=cfg.elastic_p,
                           appearance=cfg.appearance)
            loss = _loss(_logits(torch, ddp, x.to(device), device, cfg.precision), y.to(device), cfg.dice)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # gradients are averaged across ranks here
            opt.step()
            if rank != 0:
                continue
            info = {"loss": float(loss.detach()), "lr": opt.param_groups[0]["lr"],
                    "samples_per_s": step * per_rank * world / (time.perf_counter() - t0)}
            if val_regions and (step % cfg.val_every == 0 or step == cfg.steps):
                iou = evaluate(model, val_regions, card, device)
                history.append({"step": step, "loss": info["loss"], "val_iou": iou,
                                "time_s": time.perf_counter() - t0})
                info["val_iou"] = iou
                if select == "best" and iou > best and step * 2 >= cfg.steps:
                    best = iou
                    card["metrics"] = {"val_iou": iou, "step": step, "samples_seen": step * per_rank * world,
                                       "selection": select}
                    save_model(out_dir, model, card)
                    best_written = True
            if queue is not None:
                queue.put(("progress", Progress(step, cfg.steps, "train", info)))
        for buf in model.buffers():  # BatchNorm statistics follow rank 0, as at DDP's next forward
            dist.broadcast(buf, 0)
        digests: list = [None] * world
        dist.all_gather_object(digests, weights_digest(model))
        if rank == 0:
            card["training"]["ddp"]["replica_digests"] = digests
            card["training"]["ddp"]["replicas_in_sync"] = len(set(digests)) == 1
            card["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            if not best_written:
                iou = evaluate(model, val_regions, card, device) if val_regions else float("nan")
                card["metrics"] = {"val_iou": iou, "step": cfg.steps, "selection": select}
            if best_written:
                _update_card(out_dir, card)
            else:
                save_model(out_dir, model, card)
            card["history"] = history
            if queue is not None:
                queue.put(("done", card))
        dist.barrier()
        return card if rank == 0 else None
    finally:
        dist.destroy_process_group()


def _update_card(out_dir: str, card: dict) -> None:
    """Add the end-of-run DDP facts to the best model's card (weights unchanged)."""
    import json

    from ..models.store import CARD, atomic_write_bytes, read_card

    saved = read_card(out_dir)
    saved.setdefault("training", {})["ddp"] = card["training"]["ddp"]
    atomic_write_bytes(Path(out_dir) / CARD, json.dumps(saved, indent=2, default=str).encode())


def _spawned(rank, world, pairs, out_dir, cfg, device, backend, init_method, queue):
    try:
        _rank_train(rank, world, pairs, out_dir, cfg, device, backend, init_method, queue)
    except BaseException as exc:
        if rank == 0:
            queue.put(("error", f"{type(exc).__name__}: {exc}"))
        raise


def refuse_unsupported(cfg, *, resume: bool = False, synthetic=None) -> None:
    """The one list of what the DDP loop does not do; each refused with what to do instead.

    The single-process loop (:func:`~.loop.train_segmenter`) has these; this loop would silently
    ignore them, so a run asking for them is refused rather than run differently.
    """
    unsupported = {
        "--resume": resume, "--synthetic": synthetic is not None or cfg.synthetic_ratio > 0,
        "--ema": cfg.ema > 0, "--hard": cfg.hard_prob > 0, "--corrections": cfg.emphasis > 0 or cfg.anchor_share > 0,
    }
    asked = [k for k, v in unsupported.items() if v]
    if asked:
        raise ValueError(f"{', '.join(asked)} {'is' if len(asked) == 1 else 'are'} not supported with "
                         "--nproc > 1 or torchrun yet; train on one process (without --nproc)")


def train_model_ddp(
    pairs: Sequence[tuple],
    out_dir: str | Path,
    cfg=None,
    *,
    nproc: int = 2,
    device: str = "cpu",
    backend: str | None = None,
    resume: bool = False,
    register_as: str | None = None,
) -> Generator[Progress, None, dict]:
    """Train on ``nproc`` processes (or on this torchrun rank); yields rank 0's progress.

    Returns ``{"card", "model_dir", "registered", "stopped", "step"}`` like
    :func:`~.loop.train_model` (on ranks other than 0 under torchrun, ``card`` is None).
    """
    from ..models.store import register_model
    from .loop import TrainConfig

    cfg = cfg or TrainConfig()
    refuse_unsupported(cfg, resume=resume)
    out_dir = Path(out_dir)
    cuda = device.startswith("cuda")
    backend = backend or ("nccl" if cuda else "gloo")
    pairs = [(np.asarray(img), np.asarray(mask), slices) for img, mask, slices in pairs]
    if launched_by_torchrun():
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        if rank == 0:
            yield Progress(0, cfg.steps, "train")
        card = _rank_train(rank, world, pairs, str(out_dir), cfg, device, backend, "env://",
                           None, int(os.environ.get("LOCAL_RANK", rank)))
    else:
        card = yield from _spawn(pairs, out_dir, cfg, nproc, device, backend)
    written = card is not None and (out_dir / "model.safetensors").is_file()
    registered = register_model(out_dir, register_as) if (register_as and written) else None
    return {"card": card, "model_dir": out_dir if written else None, "registered": registered,
            "stopped": False, "step": cfg.steps}


def _spawn(pairs, out_dir, cfg, nproc, device, backend):
    import torch.multiprocessing as mp

    if nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {nproc}")
    if device.startswith("cuda"):
        import torch

        if torch.cuda.device_count() < nproc:
            raise ValueError(f"--nproc {nproc} needs {nproc} GPUs; torch sees {torch.cuda.device_count()}")
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    init_method = f"tcp://127.0.0.1:{_free_port()}"
    procs = mp.start_processes(
        _spawned, args=(nproc, pairs, str(out_dir), cfg, device, backend, init_method, queue),
        nprocs=nproc, join=False, start_method="spawn",
    )
    card, error = None, None

    def drain():
        nonlocal card, error
        while not queue.empty():
            kind, payload = queue.get()
            if kind == "progress":
                yield payload
            elif kind == "done":
                card = payload
            else:
                error = payload

    try:
        while True:
            yield from drain()
            try:
                finished = procs.join(timeout=0.2)
            except mp.ProcessException as exc:
                yield from drain()
                msg = error or str(exc).strip().splitlines()[-1]
                raise ValueError(f"distributed training failed: {msg}") from None
            if finished:
                break
        yield from drain()
    finally:
        for p in procs.processes:
            if p.is_alive():
                p.terminate()
    return card


def add_arguments(parser) -> None:
    """``--nproc`` for ``cellgen train``."""
    parser.add_argument(
        "--nproc", type=int, default=1, metavar="N",
        help="train with N processes (torch DDP: gloo on CPU, one GPU each with NCCL); the --batch "
        "is split across them. Under torchrun the launcher's processes are used instead.")


def train_job(pairs, out_dir, cfg, *, nproc: int = 1, device: str = "cpu", resume: bool = False,
              register_as: str | None = None, synthetic=None, anchors=None):
    """The job ``cellgen train`` runs: :func:`~.loop.train_model` on one process, else DDP.

    Under torchrun, ranks other than 0 train silently and exit the process when done.
    """
    from .loop import train_model

    if nproc <= 1 and not launched_by_torchrun():
        return (yield from train_model(pairs, out_dir, cfg, resume=resume, device=device,
                                       register_as=register_as, synthetic=synthetic, anchors=anchors))
    refuse_unsupported(cfg, resume=resume, synthetic=synthetic)
    result = yield from train_model_ddp(pairs, out_dir, cfg, nproc=nproc, device=device, resume=resume,
                                        register_as=register_as)
    if launched_by_torchrun() and int(os.environ["RANK"]) != 0:
        raise SystemExit(0)
    return result
