"""The segmentation training loop: a generator that yields progress and can be stopped any step."""

from __future__ import annotations

import datetime as _dt
import math
import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .._progress import Progress
from ..metrics import IoU
from .data import DataError, PatchSampler, Region, build_regions, check_pair, prepare_regions
from .evaluate import evaluate, hard_pixels


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
    # strength (0 off, 1 full) of the appearance changes that make a model travel to other labs' EM:
    # other microscopes, ssTEM, contrast, noise, blur, pixel and section size (train/augment.py)
    appearance: float = 0.0
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
    # the training data's voxel size (z, y, x) in nm, written to a model trained from scratch so that
    # segment can rescale other data to it (a fine-tuned model keeps its parent's)
    pixel_size_nm: tuple[float, float, float] | None = None
    # arithmetic of the training steps: "fp32", or "bf16" (autocast; about 2x faster on CPUs with
    # native bfloat16, e.g. AVX512-BF16 or AMX; weights, optimizer and loss stay float32)
    precision: str = "fp32"
    synthetic_ratio: float = 0.0  # share of each batch drawn from the synthetic pairs, if any
    # > 0: the loss on pixels the starting model gets wrong (the user's corrections) counts 1 + emphasis
    # times, and hard_prob of the patches are centred on them (found once, before the first step)
    emphasis: float = 0.0
    # share of each batch drawn from "anchor" slices (unpainted slices with the starting model's own
    # labels: what the user did not correct is kept), used only when the starting model already
    # agreed with the painted slices (IoU >= ANCHOR_MIN_AGREEMENT): on foreign EM it is not trusted
    anchor_share: float = 0.0
    # > 0 (with emphasis): the background just outside the objects of the painted slices and anchors
    # (EDGE_BAND px at model resolution, where the user did not paint) counts 1 + edge_weight in the
    # BCE, so learning painted-in parts does not grow every object
    edge_weight: float = 0.0
    # which weights are kept: "last" (the schedule's final, EMA if any), "best" (best validation IoU
    # from the second half of the run on: a checkpoint that saw almost no training is never kept),
    # "auto" (best with validation regions, else last)
    select: str = "auto"
    name: str = ""
    notes: dict = field(default_factory=dict)

    def validate(self) -> TrainConfig:
        """Raise ``ValueError`` naming the first bad option (as ``cellgen train`` spells it)."""
        from .._checks import choice, number

        for key, opt in (("steps", "--steps"), ("patch", "--patch"), ("batch", "--batch"),
                         ("val_every", "--val-every"), ("mine_every", "--mine-every"), ("base", "--base")):
            number(getattr(self, key), opt, lo=1, integer=True)
        number(self.depth, "--depth", lo=1, hi=8, integer=True)
        number(self.context, "--context", lo=0, hi=16, integer=True)
        number(self.scale, "--scale", lo=0, hi=1, lo_open=True)
        number(self.lr, "--lr", lo=0, hi=1, lo_open=True)
        number(self.weight_decay, "weight decay", lo=0)
        number(self.warmup, "warmup", lo=0, hi=1, hi_open=True)
        number(self.val_fraction, "--val-fraction", lo=0, hi=1, hi_open=True)
        number(self.seed, "--seed", lo=0, hi=2**63 - 1, integer=True)
        number(self.hard_prob, "--hard-examples", lo=0, hi=1)
        number(self.ema, "--ema", lo=0, hi=1, hi_open=True)
        number(self.synthetic_ratio, "--synthetic-ratio", lo=0, hi=1)
        number(self.appearance, "--appearance", lo=0, hi=1)
        number(self.threads, "--threads", lo=1, integer=True, none_ok=True)
        number(self.tile, "tile", lo=2**self.depth, integer=True)
        number(self.overlap, "overlap", lo=0, hi=self.tile, hi_open=True, integer=True)
        number(self.rescale, "rescale", lo=0, hi=1, lo_open=True, none_ok=True)
        number(self.recontext, "recontext", lo=0, hi=16, integer=True, none_ok=True)
        number(self.emphasis, "emphasis", lo=0, hi=1000)
        number(self.anchor_share, "anchor share", lo=0, hi=1, hi_open=True)
        number(self.edge_weight, "edge weight", lo=0, hi=1000)
        if self.pixel_size_nm is not None:
            if len(self.pixel_size_nm) != 3:
                raise ValueError(f"the pixel size must be three numbers (z, y, x in nm), got {self.pixel_size_nm}")
            for v in self.pixel_size_nm:
                number(v, "pixel size (nm)", lo=0, hi=1e6, lo_open=True, hi_open=True)
        choice(self.dice, "dice", DICE_MODES)
        choice(self.select, "select", ("auto", "best", "last"))
        choice(self.precision, "--precision", TRAIN_PRECISIONS)
        return self


def _lr_factor(step: int, total: int, warmup: float) -> float:
    w = max(1, int(total * warmup))
    if step < w:
        return (step + 1) / w
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - w) / max(1, total - w))))


DICE_MODES = ("sample", "batch")
TRAIN_PRECISIONS = ("fp32", "bf16")


def _logits(torch, model, x, device: str, precision: str):
    """The training forward pass in the run's arithmetic (bfloat16 autocast for "bf16"), as float32
    logits for the loss. Used by the loop, DDP and the time estimate alike; the generator's stages use
    the same rule (``generate.config.autocast``)."""
    from ..generate.config import autocast

    with autocast(torch, precision, device):
        out = model(x)
    return out.float() if precision == "bf16" else out


def _fast_layout(torch, t, device: str):
    """A model or batch in oneDNN's fast layout on the CPU (channels-last: 1.18x faster steps here, the
    same arithmetic); unchanged elsewhere. Used by the loop and by the time estimate alike."""
    if torch.device(device).type != "cpu":
        return t
    if isinstance(t, torch.Tensor):
        return t.contiguous(memory_format=torch.channels_last)
    return t.to(memory_format=torch.channels_last)


def _loss(logits, target, dice: str = "sample", emphasis: float = 0.0):
    """Binary cross-entropy plus soft Dice.

    ``dice="sample"`` averages one Dice per patch; ``"batch"`` computes one Dice over
    the whole batch, so a patch with no (or a sliver of) foreground, such as one
    centred on a look-alike, does not dominate the gradient.
    """
    import torch
    from torch.nn import functional as F

    if dice not in DICE_MODES:
        raise ValueError(f"dice must be one of {DICE_MODES}, got {dice!r}")
    weight = None
    if target.shape[1] == 2:  # (mask, emphasis map): corrected pixels count 1 + emphasis times in the BCE
        target, weight = target[:, :1], 1 + emphasis * target[:, 1:]
    bce = F.binary_cross_entropy_with_logits(logits, target, weight=weight)
    p = torch.sigmoid(logits)
    dims = (0, 1, 2, 3) if dice == "batch" else (1, 2, 3)
    inter = (p * target).sum(dims)
    d = 1 - (2 * inter + 1) / (p.sum(dims) + target.sum(dims) + 1)
    return bce + d.mean()


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
        if cfg.pixel_size_nm is not None:
            card["pixel_size_nm"] = [float(v) for v in cfg.pixel_size_nm]
        return model, card
    model, parent = load_model(cfg.init)
    card = {k: parent[k] for k in ("context", "scale", "tile", "overlap", "normalization", "pixel_size_nm")
            if k in parent}
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


def train_segmenter(
    pairs: Sequence[tuple],
    out_dir: str | Path,
    cfg: TrainConfig | None = None,
    *,
    val_pairs: Sequence[tuple] | None = None,
    resume: bool = False,
    device: str = "cpu",
    synthetic: tuple | None = None,
    anchors: Sequence[tuple] | None = None,
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

    ``anchors``: ``(image, mask, slices)`` triples of slices the user did not correct, holding the
    starting model's own labels; ``cfg.anchor_share`` of each batch comes from them (see
    :class:`TrainConfig`).
    """
    import torch

    cfg = (cfg or TrainConfig()).validate()  # the CLI, the docks and scripts: one check
    out_dir = Path(out_dir)
    threads_before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        card = yield from _train(torch, pairs, out_dir, cfg, val_pairs, resume, device, synthetic, anchors)
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


EDGE_BAND = 2  # model pixels (4 input pixels at the shipped scale): where fine-tuning grew objects


def _emphasis_maps(regions, errors, cfg) -> list[np.ndarray]:
    """Per-region loss emphasis (the BCE weight is ``1 + cfg.emphasis * map``): 1 on the corrections,
    ``edge_weight / emphasis`` on the background band just outside the labels, else 0."""
    from scipy import ndimage as ndi

    out = []
    for i, r in enumerate(regions):
        m = np.zeros(r.mask.shape, np.float32)
        if cfg.edge_weight > 0:
            fg = r.mask >= 0.5
            band = ~fg & (ndi.distance_transform_edt(~fg) <= EDGE_BAND)
            m[band] = cfg.edge_weight / cfg.emphasis
        if errors is not None:
            m[errors[i]] = 1.0
        out.append(m)
    return out


ANCHOR_MIN_AGREEMENT = 0.8  # "already mostly right": set by reasoning, not tuned


def _anchor_sampler(agree, cfg, card, anchors, seed):
    """A sampler over the anchor slices, or None (and why) when the model, agreeing with the painted
    slices at IoU ``agree``, is not to be trusted there."""
    if not anchors or cfg.anchor_share <= 0:
        return None, None
    info = {"start_iou_on_painted": agree, "share": cfg.anchor_share}
    if agree < ANCHOR_MIN_AGREEMENT:
        return None, {**info, "used": False, "why": f"the starting model agreed with the painted slices at "
                      f"IoU {agree:.2f} < {ANCHOR_MIN_AGREEMENT}: its own labels are not kept"}
    regions = []
    for image, mask, zs in anchors:
        regions += build_regions(image, mask, list(zs), card)
    info.update(used=True, slices=sorted(r.z for r in regions))
    return PatchSampler(regions, cfg.patch, cfg.fg_prob, seed), info


def _train(torch, pairs, out_dir, cfg, val_pairs, resume, device, synthetic=None, anchors=None):
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
    select = _selection(cfg, val_regions)
    card["training"]["selection"] = select
    step, best, history = 0, -1.0, []
    if resume and (out_dir / "last" / "state.json").exists():
        st = load_training_state(out_dir / "last", model, opt)
        step, best, history = st["step"], st["best"], st["history"]
        sampler.rng.bit_generator.state = st["sampler_rng"]
        if syn_sampler is not None and "synthetic_rng" in st:
            syn_sampler.rng.bit_generator.state = st["synthetic_rng"]
        gen.set_state(torch.tensor(st["aug_rng"], dtype=torch.uint8))
    _fast_layout(torch, model.to(device), device).train()
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
    use_anchors = step == 0 and anchors and cfg.anchor_share > 0
    agree = None
    if cfg.emphasis > 0 or use_anchors:
        # one pass of the model over the painted slices: the corrections (where it disagrees with the
        # painted masks; on resume, the resumed model's disagreement) and how far it agrees overall
        yield Progress(step, cfg.steps, "find hard examples")
        errors = hard_pixels(model, train_regions, card, device, erode=False)  # every corrected pixel
        iou = IoU()
        for r, wrong in zip(train_regions, errors, strict=True):
            truth = r.mask >= 0.5
            iou.add(truth != wrong, truth)  # the model's own mask: the painted one, wrong pixels flipped
        agree = iou.value
    if cfg.emphasis > 0:
        card["training"]["corrected_pixels"] = int(sum(np.count_nonzero(e) for e in errors))
        sampler.set_emphasis(_emphasis_maps(sampler.regions, errors, cfg))
        n_hard = sampler.set_hard(errors)
        next_mine = cfg.steps  # the corrections stay the target: no re-mining
    anchor_sampler, card["training"]["anchors"] = (
        _anchor_sampler(agree, cfg, card, anchors, cfg.seed + 2) if use_anchors else (None, None))
    if anchor_sampler is not None and cfg.emphasis > 0 and cfg.edge_weight > 0:
        anchor_sampler.set_emphasis(_emphasis_maps(anchor_sampler.regions, None, cfg))
    n_anchor = int(round(cfg.batch * cfg.anchor_share)) if anchor_sampler is not None else 0

    def checkpoint_last():  # last/ (weights, EMA, optimizer, state) is written as one unit
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
            ema=ema,
        )

    def write_best(iou):
        nonlocal best_written
        card["metrics"] = {"val_iou": iou, "step": step, "samples_seen": step * cfg.batch,
                           "selection": select}
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
            if n_syn or n_anchor:
                own = cfg.batch - n_syn - n_anchor
                parts = [sampler.sample(own)] if own > 0 else []
                parts += [s.sample(k) for s, k in ((syn_sampler, n_syn), (anchor_sampler, n_anchor)) if k]
                c = max(m.shape[1] for _, m in parts)  # synthetic and anchor pairs carry no emphasis channel
                y = np.concatenate([np.pad(m, ((0, 0), (0, c - m.shape[1]), (0, 0), (0, 0))) for _, m in parts])
                x = np.concatenate([a for a, _ in parts])
            else:
                x, y = sampler.sample(cfg.batch)
            x, y = augment(torch.from_numpy(x), torch.from_numpy(y), gen, elastic_p=cfg.elastic_p,
                           appearance=cfg.appearance)
            x = _fast_layout(torch, x.to(device), device)
            # explicit: a reused worker thread may have been left in no-grad/inference mode
            with torch.inference_mode(False), torch.enable_grad():
                logits = _logits(torch, model, x, device, cfg.precision)
                loss = _loss(logits, y.to(device), cfg.dice, cfg.emphasis)
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
                if select == "best" and iou > best and step * 2 >= cfg.steps:
                    best = iou
                    write_best(iou)
                checkpoint_last()
            yield Progress(step, cfg.steps, "train", info)
    finally:
        # stopped, crashed or finished: the best checkpoint must exist and ``last`` be current
        # (unless nothing was trained: an untouched model is not a result)
        if step and (select == "last" or not best_written):
            iou = evaluate(judged, val_regions, card, device) if val_regions else float("nan")
            write_best(iou)
        if step:
            checkpoint_last()
    card["history"] = history
    return card


def _selection(cfg: TrainConfig, val_regions) -> str:
    if cfg.select not in ("auto", "best", "last"):
        raise DataError(f"select must be 'auto', 'best' or 'last', got {cfg.select!r}")
    if cfg.select == "best" and not val_regions:
        raise DataError("select='best' needs validation slices: give more slices or a validation set")
    return cfg.select if cfg.select != "auto" else ("best" if val_regions else "last")


# the recipes and the job around the loop live in recipes.py; their old home still serves them
from .recipes import (  # noqa: E402, F401
    CORRECTIONS,
    MAX_ANCHOR_SLICES,
    base_model_info,
    correction_data,
    corrections_config,
    default_lr,
    default_run_dir,
    patch_at_model_scale,
    train_model,
)
