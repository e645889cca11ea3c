"""The segmentation training loop: a generator that yields progress and can be stopped any step."""

from __future__ import annotations

import datetime as _dt
import math
import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .._progress import Progress, stoppable
from .data import DataError, PatchSampler, Region, annotated_slices, build_regions, check_pair, split_rows


@dataclass
class TrainConfig:
    steps: int = 1000
    patch: int = 128  # at model resolution
    batch: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: float = 0.05
    val_fraction: float = 0.15
    val_every: int = 100
    seed: int = 0
    fg_prob: float = 0.5
    elastic_p: float = 0.3
    hard_prob: float = 0.0  # share of patches centred on pixels the model currently gets wrong
    mine_every: int = 1000  # re-find those pixels (one pass over the training slices) every N steps
    ema: float = 0.0  # > 0: validate and keep an exponential moving average of the weights (e.g. 0.999)
    dice: str = "sample"  # soft Dice per patch ("sample") or over the whole batch ("batch")
    rescale: float | None = None  # continue from ``init`` at this scale (and cfg.tile) instead of its own
    recontext: int | None = None  # continue from ``init`` with this many neighbouring slices each side
    init: str = "scratch"  # "scratch", "default", a model name or a folder
    base: int = 16
    depth: int = 4
    context: int = 1
    scale: float = 0.5
    tile: int = 256
    overlap: int = 32
    threads: int | None = None
    synthetic_ratio: float = 0.0  # share of each batch drawn from the synthetic pairs, if any
    name: str = ""
    notes: dict = field(default_factory=dict)


def _lr_factor(step: int, total: int, warmup: float) -> float:
    w = max(1, int(total * warmup))
    if step < w:
        return (step + 1) / w
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - w) / max(1, total - w))))


DICE_MODES = ("sample", "batch")


def _loss(logits, target, dice: str = "sample"):
    """Binary cross-entropy plus soft Dice.

    ``dice="sample"`` averages one Dice per patch; ``"batch"`` computes one Dice over
    the whole batch, so a patch with no (or a sliver of) foreground, such as one
    centred on a look-alike, does not dominate the gradient.
    """
    import torch
    from torch.nn import functional as F

    if dice not in DICE_MODES:
        raise ValueError(f"dice must be one of {DICE_MODES}, got {dice!r}")
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    dims = (0, 1, 2, 3) if dice == "batch" else (1, 2, 3)
    inter = (p * target).sum(dims)
    d = 1 - (2 * inter + 1) / (p.sum(dims) + target.sum(dims) + 1)
    return bce + d.mean()


def _region_probs(model, regions: Sequence[Region], card: dict, device: str = "cpu", batch_size: int = 4):
    """The model's foreground probability over each region (model resolution), in eval mode."""
    from .._progress import run
    from ..segment.predict import make_forward
    from ..segment.tiling import predict_plane

    model.eval()
    fn = make_forward(model, device)
    divisor = 2 ** int(card["architecture"]["depth"])
    try:
        for r in regions:
            yield r, run(predict_plane(fn, r.planes, card["tile"], card["overlap"], batch_size, divisor))
    finally:
        model.train()


def evaluate(model, regions: Sequence[Region], card: dict, device: str = "cpu", batch_size: int = 4) -> float:
    """Foreground IoU (threshold 0.5) over validation regions at model resolution."""
    inter = union = 0
    for r, prob in _region_probs(model, regions, card, device, batch_size):
        pred, gt = prob >= 0.5, r.mask >= 0.5
        inter += int(np.logical_and(pred, gt).sum())
        union += int(np.logical_or(pred, gt).sum())
    return inter / union if union else 1.0


def hard_pixels(model, regions: Sequence[Region], card: dict, device: str = "cpu") -> list[np.ndarray]:
    """Where the model is wrong on each training region, ignoring one-pixel slivers along edges.

    A 3x3 erosion of the error map keeps false objects (look-alikes such as
    multivesicular bodies) and thick misses, and drops the thin boundary
    disagreements that are as much annotation noise as model error.
    """
    from scipy import ndimage as ndi

    return [ndi.binary_erosion((prob >= 0.5) != (r.mask >= 0.5))
            for r, prob in _region_probs(model, regions, card, device)]


def _init_model(cfg: TrainConfig):
    from ..models.store import load_model
    from ..models.unet import UNet

    if cfg.init in ("scratch", "", None):
        model = UNet(in_channels=2 * cfg.context + 1, base=cfg.base, depth=cfg.depth)
        card = {
            "context": cfg.context,
            "scale": cfg.scale,
            "tile": cfg.tile,
            "overlap": cfg.overlap,
            "normalization": {"kind": "percentile", "low": 1.0, "high": 99.0},
            "parent": None,
        }
        return model, card
    model, parent = load_model(cfg.init)
    card = {k: parent[k] for k in ("context", "scale", "tile", "overlap", "normalization") if k in parent}
    card.setdefault("tile", cfg.tile)
    card.setdefault("overlap", cfg.overlap)
    if cfg.rescale:  # the same network, taught to work at another resolution
        if not 0.05 <= cfg.rescale <= 1.0:
            raise DataError(f"the new scale must be between 0.05 and 1, got {cfg.rescale}")
        card["scale"], card["tile"] = float(cfg.rescale), int(cfg.tile)
    if cfg.recontext is not None and cfg.recontext != card.get("context", 0):
        from ..models.unet import widen_context

        try:
            widen_context(model, int(card.get("context", 0)), int(cfg.recontext))
        except ValueError as e:
            raise DataError(f"cannot continue {cfg.init} with context {cfg.recontext}: {e}") from None
        card["context"] = int(cfg.recontext)
    card["parent"] = parent.get("name", str(cfg.init))
    model.train()
    return model, card


def prepare_regions(pairs, card, val_pairs, val_fraction):
    """Training and validation regions from ``(image, mask, slices)`` triples."""
    train_regions, val_regions = [], []
    for i, (image, mask, slices) in enumerate(pairs):
        check_pair(image, mask, f"pair {i}")
        zs = annotated_slices(mask, slices)
        if not zs:
            raise DataError(
                f"pair {i} has no annotated slice: paint some mitochondria (or pass the slices to use)"
            )
        regions = build_regions(image, mask, zs, card)
        for r in regions:
            r.pair = i
        if val_pairs is None and val_fraction > 0:
            if len(regions) >= max(2, round(1 / val_fraction)):
                # enough slices: hold out the last ones (a contiguous block, no leak from neighbours)
                nval = max(1, int(round(len(regions) * val_fraction)))
                nval = min(nval, len(regions) - 1)
                val_regions += regions[-nval:]
                regions = regions[:-nval]
            else:
                # a few corrected slices: keep all of them for training, minus a bottom strip each
                split = [split_rows(r, val_fraction) for r in regions]
                regions = [tr for tr, _ in split]
                val_regions += [va for _, va in split]
        train_regions += regions
    if val_pairs is not None:
        for i, (image, mask, slices) in enumerate(val_pairs):
            check_pair(image, mask, f"validation pair {i}")
            zs = annotated_slices(mask, slices)
            if not zs:
                raise DataError(f"validation pair {i} has no annotated slice")
            regions = build_regions(image, mask, zs, card)
            for r in regions:
                r.pair = i
            val_regions += regions
    if sum(float(r.mask.sum()) for r in train_regions) == 0:
        raise DataError("the training masks are empty: there is no foreground to learn from")
    return train_regions, val_regions


def train_segmenter(
    pairs: Sequence[tuple],
    out_dir: str | Path,
    cfg: TrainConfig | None = None,
    *,
    val_pairs: Sequence[tuple] | None = None,
    resume: bool = False,
    device: str = "cpu",
    synthetic: tuple | None = None,
) -> Generator[Progress, None, dict]:
    """Train (or fine-tune) a U-Net on ``(image, mask, slices)`` triples.

    ``slices`` is a list of annotated slice indices or None (= every slice with any
    annotation: an unlabelled slice is not background). Writes ``out_dir`` (the
    best model by validation IoU, usable as ``--model out_dir``) and
    ``out_dir/last`` (resumable). Closing the generator, an exception or the end
    of training all leave a valid best checkpoint. Returns the final card.

    ``synthetic`` = ``(images, masks)``, N independent 2D pairs (e.g. from ``cellgen
    synth``): ``round(batch * cfg.synthetic_ratio)`` patches of every batch come from them;
    they are never used for validation.
    """
    import torch

    cfg = cfg or TrainConfig()
    out_dir = Path(out_dir)
    threads_before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        card = yield from _train(torch, pairs, out_dir, cfg, val_pairs, resume, device, synthetic)
    finally:
        torch.set_num_threads(threads_before)
    return card


def _synthetic_regions(synthetic, card) -> list[Region]:
    images, masks = synthetic
    if tuple(images.shape) != tuple(masks.shape) or images.ndim != 3:
        raise DataError(f"synthetic images {tuple(images.shape)} and masks {tuple(masks.shape)} must be "
                        "two (N, Y, X) arrays of one shape")
    out = []
    for i in range(images.shape[0]):  # independent 2D pairs: no neighbours across them
        check_pair(images[i], masks[i], f"synthetic pair {i}")
        out += build_regions(np.asarray(images[i]), np.asarray(masks[i]), [0], card)
    return out


def _train(torch, pairs, out_dir, cfg, val_pairs, resume, device, synthetic=None):
    from ..models.store import save_model
    from .augment import augment
    from .checkpoint import load_training_state, save_training_state

    torch.manual_seed(cfg.seed)
    model, card = _init_model(cfg)
    yield Progress(0, cfg.steps, "prepare data")
    train_regions, val_regions = prepare_regions(pairs, card, val_pairs, cfg.val_fraction)
    sampler = PatchSampler(train_regions, cfg.patch, cfg.fg_prob, cfg.seed, hard_prob=cfg.hard_prob)
    n_syn = int(round(cfg.batch * cfg.synthetic_ratio)) if synthetic is not None else 0
    if synthetic is not None and not 0.0 <= cfg.synthetic_ratio <= 1.0:
        raise DataError(f"the synthetic ratio must be between 0 and 1, got {cfg.synthetic_ratio}")
    syn_sampler = None
    if n_syn:
        syn_sampler = PatchSampler(_synthetic_regions(synthetic, card), cfg.patch, cfg.fg_prob, cfg.seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    card.update(
        architecture=model.config,
        name=cfg.name or out_dir.name,
        training={
            "config": {k: v for k, v in asdict(cfg).items() if k != "notes"},
            "train_slices": len(train_regions),
            "synthetic": (
                {"pairs": len(syn_sampler.regions), "per_batch": n_syn, "ratio": cfg.synthetic_ratio}
                if syn_sampler else None
            ),
            "val_regions": len(val_regions),
            # (pair, slice) of every region used: an unlabelled slice never appears here
            "slices": {
                "train": sorted({(r.pair, r.z) for r in train_regions}),
                "val": sorted({(r.pair, r.z) for r in val_regions}),
            },
            **cfg.notes,
        },
    )
    step, best, history = 0, -1.0, []
    if resume and (out_dir / "last" / "state.json").exists():
        st = load_training_state(out_dir / "last", model, opt)
        step, best, history = st["step"], st["best"], st["history"]
        sampler.rng.bit_generator.state = st["sampler_rng"]
        if syn_sampler is not None and "synthetic_rng" in st:
            syn_sampler.rng.bit_generator.state = st["synthetic_rng"]
        gen.set_state(torch.tensor(st["aug_rng"], dtype=torch.uint8))
    model.to(device).train()
    ema = None
    if cfg.ema:
        import copy

        from ..models.store import load_tensors
        from .ema import ema_decay, ema_update

        ema = copy.deepcopy(model)  # validated and saved in place of the raw weights
        if resume and (out_dir / "last" / "ema.safetensors").exists():
            ema.load_state_dict(load_tensors(out_dir / "last" / "ema.safetensors"))
        for p in ema.parameters():
            p.requires_grad_(False)
    judged = ema if ema is not None else model
    best_written = (out_dir / "model.safetensors").exists() and resume
    t0, seen, last_loss = time.perf_counter(), 0, float("nan")
    next_mine, n_hard = step, 0  # hard examples are found again on resume (they are not saved)

    def checkpoint_last():
        if ema is not None:
            from ..models.store import save_tensors

            save_tensors(out_dir / "last" / "ema.safetensors", ema.state_dict())
        save_training_state(
            out_dir / "last",
            model,
            opt,
            {**card, "metrics": {"step": step, "best_val_iou": best}},
            {
                "step": step,
                "best": best,
                "history": history,
                "sampler_rng": sampler.rng.bit_generator.state,
                "synthetic_rng": syn_sampler.rng.bit_generator.state if syn_sampler else None,
                "aug_rng": gen.get_state().tolist(),
                "torch_rng": torch.get_rng_state().tolist(),
            },
        )

    def write_best(iou):
        nonlocal best_written
        card["metrics"] = {"val_iou": iou, "step": step, "samples_seen": step * cfg.batch}
        card["date"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        save_model(out_dir, judged, card)
        best_written = True

    try:
        while step < cfg.steps:
            if cfg.hard_prob and step >= next_mine:
                yield Progress(step, cfg.steps, "find hard examples")
                n_hard = sampler.set_hard(hard_pixels(model, train_regions, card, device))
                next_mine = step + max(1, cfg.mine_every)
            for group in opt.param_groups:
                group["lr"] = cfg.lr * _lr_factor(step, cfg.steps, cfg.warmup)
            if n_syn:
                parts = [sampler.sample(cfg.batch - n_syn)] if cfg.batch > n_syn else []
                parts.append(syn_sampler.sample(n_syn))
                x, y = np.concatenate([a for a, _ in parts]), np.concatenate([m for _, m in parts])
            else:
                x, y = sampler.sample(cfg.batch)
            x, y = augment(torch.from_numpy(x), torch.from_numpy(y), gen, elastic_p=cfg.elastic_p)
            # explicit: a reused worker thread may have been left in no-grad/inference mode
            with torch.inference_mode(False), torch.enable_grad():
                loss = _loss(model(x.to(device)), y.to(device), cfg.dice)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if ema is not None:
                ema_update(ema, model, ema_decay(cfg.ema, step))
            step += 1
            seen += cfg.batch
            last_loss = float(loss.detach())
            info = {"loss": last_loss, "lr": opt.param_groups[0]["lr"],
                    "samples_per_s": seen / (time.perf_counter() - t0)}
            if cfg.hard_prob:
                info["hard_pixels"] = n_hard
            if val_regions and (step % cfg.val_every == 0 or step == cfg.steps):
                iou = evaluate(judged, val_regions, card, device)
                history.append({"step": step, "loss": last_loss, "val_iou": iou,
                                "time_s": time.perf_counter() - t0})
                info["val_iou"] = iou
                if iou > best:
                    best = iou
                    write_best(iou)
                checkpoint_last()
            yield Progress(step, cfg.steps, "train", info)
    finally:
        # stopped, crashed or finished: the best checkpoint must exist and ``last`` be current
        # (unless nothing was trained: an untouched model is not a result)
        if not best_written and step:
            iou = evaluate(judged, val_regions, card, device) if val_regions else float("nan")
            write_best(iou)
        if step:
            checkpoint_last()
    card["history"] = history
    return card


# ---------------------------------------------------------------------------
# Helpers shared by ``cellgen train`` and the Train widget


def base_model_info(init: str | None, cfg: TrainConfig | None = None) -> dict:
    """``scale`` and ``depth`` a run starting from ``init`` will use (reads only the card)."""
    from ..models.store import read_card, resolve

    cfg = cfg or TrainConfig()
    if init in (None, "", "scratch"):
        return {"scale": cfg.scale, "depth": cfg.depth, "name": "scratch"}
    card = read_card(resolve(init))
    return {
        "scale": float(card.get("scale", 1.0)),
        "depth": int(card["architecture"]["depth"]),
        "name": card.get("name", str(init)),
    }


def patch_at_model_scale(patch_px: int, scale: float, depth: int) -> int:
    """A patch of ``patch_px`` input pixels at model resolution, a multiple of ``2**depth``."""
    d = 2 ** int(depth)
    if patch_px <= 0:
        raise DataError(f"the patch size must be positive, got {patch_px}")
    return max(d, int(round(patch_px * scale / d)) * d)


def default_lr(init: str | None) -> float:
    """2e-3 from scratch, 5e-4 when fine-tuning (a pretrained model forgets less)."""
    return 2e-3 if init in (None, "", "scratch") else 5e-4


def train_model(
    pairs: Sequence[tuple],
    out_dir: str | Path,
    cfg: TrainConfig | None = None,
    *,
    val_pairs: Sequence[tuple] | None = None,
    resume: bool = False,
    device: str = "cpu",
    register_as: str | None = None,
    stop=None,
    synthetic: tuple | None = None,
) -> Generator[Progress, None, dict]:
    """:func:`train_segmenter`, plus a polite stop and registration of the result.

    ``stop`` is a callable (e.g. ``threading.Event().is_set``) checked before
    each step: when it returns True the training generator is closed *in the
    calling thread*, which writes the best checkpoint, and the job returns
    normally with ``stopped=True``. If ``register_as`` is given, the best model
    (finished or stopped) is copied into the user models folder under that name.

    Returns ``{"card", "model_dir", "registered", "stopped", "step"}``;
    ``model_dir``/``card`` are None if it was stopped before the first step.
    """
    from ..models.store import read_card, register_model

    out_dir = Path(out_dir)
    gen = train_segmenter(pairs, out_dir, cfg, val_pairs=val_pairs, resume=resume, device=device,
                          synthetic=synthetic)
    # on stop, closing the generator evaluates and writes the best checkpoint if none was written
    stopped, card, last = yield from stoppable(gen, stop)
    step = last.done if last is not None else 0
    written = (out_dir / "model.safetensors").is_file() and (out_dir / "card.json").is_file()
    if card is None and written:
        card = read_card(out_dir)
    registered = register_model(out_dir, register_as) if (register_as and written) else None
    return {
        "card": card,
        "model_dir": out_dir if written else None,
        "registered": registered,
        "stopped": stopped,
        "step": step,
    }


def default_run_dir(name: str) -> Path:
    """Where a named run keeps its checkpoints (``last/`` is resumable) before registration."""
    from ..models.store import user_dir

    return user_dir().parent / "training-runs" / name


def edited_slices(paint_atoms) -> set[int]:
    """Slice (axis 0) indices touched by the atoms of a napari Labels ``paint`` event.

    Understands both atom kinds napari emits: a masked edit with a ``slice_key`` of
    slices, and the ``(indices, old_values, new_values)`` fancy-index tuple.
    """
    zs: set[int] = set()
    for atom in paint_atoms or ():
        key = getattr(atom, "slice_key", None)
        if key is not None:
            s = key[0]
            if isinstance(s, slice):
                zs.update(range(s.start or 0, s.stop if s.stop is not None else (s.start or 0) + 1))
            else:
                zs.add(int(s))
        else:
            idx = atom[0]
            first = idx[0] if isinstance(idx, tuple) else idx
            zs.update(int(z) for z in np.unique(np.asarray(first)))
    return zs
