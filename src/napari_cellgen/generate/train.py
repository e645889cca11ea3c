"""Training a generator: VAE -> cached latents -> mask-conditioned denoiser, as progress generators.

The low-label design (issue 6) is explicit in :func:`train_generator`: ``images`` may be a whole
volume, but only the masks of ``slices`` are ever read (``masks[z]`` for ``z`` in ``slices``). The
VAE and the denoiser learn from every image slice; a slice without an allowed mask is always shown
to the denoiser with the null condition, so it teaches the unconditional model (which classifier-free
guidance needs anyway) and the masks of ``slices`` teach the conditioning. The mask-layout
statistics are fitted on the allowed masks only. ``init`` starts from another generator (e.g. an
unconditional one trained once on all images) and, with ``vae_steps=0``, keeps its VAE: the cheap
way to make one k-slice generator per annotation set.

Stages yield ``Progress(done, total, stage, info)`` with stage "prepare", "vae", "encode",
"diffusion". Closing the generator between steps leaves the last VAE / best denoiser written
(atomically); a folder is a complete generator once ``layout.json``, ``vae/`` (with latent
statistics) and ``denoiser/`` exist.
"""

from __future__ import annotations

import copy
import datetime as _dt
import math
import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .._progress import Progress, stoppable
from ..segment.preprocess import normalize, resize, scaled_shape
from .schedule import DEFAULT_SCHEDULE

# dihedral variants (rot90 count, flip left-right); the first four cover all four rotations
VARIANTS = [(0, False), (1, True), (2, False), (3, True), (1, False), (0, True), (3, False), (2, True)]


class GeneratorDataError(ValueError):
    """Training data for a generator that cannot be used as given."""


@dataclass
class GeneratorConfig:
    # VAE
    vae_steps: int = 3000
    vae_batch: int = 8
    vae_patch: int = 128
    vae_lr: float = 1e-3
    vae_channels: tuple = (32, 64, 128)
    vae_blocks: int = 1
    latent_channels: int = 4
    kl_weight: float = 1e-5
    ssim_weight: float = 0.5
    grad_weight: float = 0.5
    adv_weight: float = 0.0
    adv_start: float = 0.5
    vae_minutes: float | None = None
    # latent cache
    latent_variants: int = 2
    # denoiser
    diffusion_steps: int = 4000
    diffusion_batch: int = 8  # of full-size crops; half-size crops get 4x
    latent_crop: int = 32  # latent side of a training crop (= tile / VAE factor)
    small_crop_p: float = 0.75  # fraction of steps on half-side crops with 4x the batch (same cost, more samples)
    diffusion_lr: float = 5e-4
    block_out_channels: tuple = (64, 128, 128)
    layers_per_block: int = 1
    attention_levels: tuple = (1, 2)
    p_uncond: float = 0.15
    cond_fraction: float = 0.5
    ema_decay: float = 0.999
    min_snr_gamma: float = 5.0
    diffusion_minutes: float | None = None
    schedule: dict = field(default_factory=lambda: dict(DEFAULT_SCHEDULE))
    # common
    scale: float = 1.0  # the generator's pixel size relative to the input (0.5 = half resolution)
    tile: int = 256
    val_every: int = 250
    warmup: int = 100
    seed: int = 0
    threads: int | None = None
    name: str = ""
    notes: dict = field(default_factory=dict)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _lr_factor(step: int, steps: int, t0: float, minutes: float | None, warmup: int) -> float:
    """Linear warmup, then cosine decay to 10 % over whichever runs out first: steps or time."""
    if step < warmup:
        return (step + 1) / warmup
    frac = step / max(1, steps)
    if minutes:
        frac = max(frac, (time.perf_counter() - t0) / (60 * minutes))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))


def _out_of_time(t0: float, minutes: float | None) -> bool:
    return bool(minutes) and time.perf_counter() - t0 >= 60 * minutes


def dihedral(a: np.ndarray, v: int) -> np.ndarray:
    k, flip = VARIANTS[v]
    a = np.rot90(a, k, axes=(-2, -1))
    return a[..., ::-1] if flip else a


def prepare_slice(image2d, scale: float = 1.0) -> np.ndarray:
    """Per-slice percentile normalisation (1-99 %) to [-1, 1], optional rescale; float32."""
    img = normalize(np.asarray(image2d), 1.0, 99.0) * 2.0 - 1.0
    if scale != 1.0:
        img = resize(img, scaled_shape(img.shape, scale), "area")
    return np.clip(img, -1.0, 1.0).astype(np.float32)


def _prepare_mask(mask2d, scale: float = 1.0) -> np.ndarray:
    m = np.asarray(mask2d)
    if m.dtype.kind not in "biuf":
        raise GeneratorDataError(f"masks must be numeric labels, got dtype {m.dtype}")
    m = m != 0
    if scale != 1.0:
        m = resize(m.astype(np.float32), scaled_shape(m.shape, scale), "area") >= 0.5
    return m


# ----------------------------------------------------------------------------------------- VAE


def _vae_card(vae, cfg: GeneratorConfig, extra: dict) -> dict:
    return {
        "kind": "vae",
        "architecture": vae.config,
        "normalization": {"kind": "percentile", "low": 1.0, "high": 99.0, "range": [-1.0, 1.0]},
        "scale": cfg.scale,
        "tile": cfg.tile,
        "date": _now(),
        **extra,
    }


def _crop_batch(vol, zs, patch, batch, rng):
    h, w = vol[zs[0]].shape
    out = np.empty((batch, 1, patch, patch), np.float32)
    for i in range(batch):
        z = zs[rng.integers(len(zs))]
        y, x = rng.integers(0, h - patch + 1), rng.integers(0, w - patch + 1)
        out[i, 0] = dihedral(vol[z][y : y + patch, x : x + patch], int(rng.integers(8)))
    return out


def vae_metrics(vae, tiles) -> dict:
    """PSNR (data range 2) and SSIM of posterior-mean reconstructions of (N, 1, H, W) tiles."""
    import torch

    from ..models.vae import ssim

    vae.eval()
    with torch.inference_mode():
        x = torch.from_numpy(tiles)
        rec = torch.cat([vae.decode(vae.encode(x[i : i + 8]).mean).clamp(-1, 1) for i in range(0, len(x), 8)])
        mse = float(((rec - x) ** 2).mean())
        out = {
            "psnr": 10 * math.log10(4.0 / max(mse, 1e-12)),
            "ssim": float(ssim(rec, x)),
            "l1": float((rec - x).abs().mean()),
        }
    vae.train()
    return out


def estimate_noise_std(vae, tiles) -> float:
    """Pixel noise the VAE does not reproduce: robust (MAD) std of the reconstruction residual.

    Uses neighbouring-pixel differences of the residual (variance 2 sigma^2 for white noise), so
    structure left in the residual barely counts. Sampling can add this noise back
    (the VAE's Gaussian observation model), which real EM has and a mean decoder lacks.
    """
    import torch

    vae.eval()
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(tiles, np.float32))
        rec = torch.cat([vae.decode(vae.encode(x[i : i + 8]).mean) for i in range(0, len(x), 8)])
        r = (x - rec)[:, 0]
        d = torch.cat([(r[:, :, 1:] - r[:, :, :-1]).flatten(), (r[:, 1:, :] - r[:, :-1, :]).flatten()])
        sigma = float(d.abs().median()) / 0.6745 / math.sqrt(2)
    vae.train()
    return sigma


def train_vae(
    vol: dict,
    train_z: list[int],
    val_tiles,
    out_dir: Path,
    cfg: GeneratorConfig,
    vae=None,
    device: str = "cpu",
) -> Generator[Progress, None, object]:
    """Train (or continue) the VAE on random crops; writes ``out_dir/vae``; returns the model."""
    import torch
    from torch.nn import functional as F

    from ..models.vae import ConvVAE, PatchDiscriminator, gradient_l1, ssim
    from .store import save_part

    torch.manual_seed(cfg.seed)
    if vae is None:
        vae = ConvVAE(1, tuple(cfg.vae_channels), cfg.latent_channels, cfg.vae_blocks)
    vae.to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=1e-4)
    disc = dopt = None
    if cfg.adv_weight > 0:
        disc = PatchDiscriminator().to(device)
        dopt = torch.optim.AdamW(disc.parameters(), lr=cfg.vae_lr * 0.5, betas=(0.5, 0.9))
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    patch = min(cfg.vae_patch, *vol[train_z[0]].shape) // vae.divisor * vae.divisor
    t0 = time.perf_counter()
    step, history, metrics = 0, [], {}

    def write():
        card = _vae_card(
            vae,
            cfg,
            {
                "metrics": {**metrics, "step": step},
                "training": {
                    "steps": step,
                    "patch": patch,
                    "batch": cfg.vae_batch,
                    "image_slices": len(train_z),
                    "time_s": round(time.perf_counter() - t0, 1),
                    "history": history[-20:],
                },
            },
        )
        save_part(out_dir / "vae", vae, card)

    try:
        while step < cfg.vae_steps and not _out_of_time(t0, cfg.vae_minutes):
            for g in opt.param_groups:
                g["lr"] = cfg.vae_lr * _lr_factor(step, cfg.vae_steps, t0, cfg.vae_minutes, cfg.warmup)
            x = torch.from_numpy(_crop_batch(vol, train_z, patch, cfg.vae_batch, rng)).to(device)
            rec, post = vae(x, generator=gen)
            loss_rec = (rec - x).abs().mean()
            loss = loss_rec + cfg.kl_weight * post.kl()
            if cfg.ssim_weight:
                loss = loss + cfg.ssim_weight * (1 - ssim(rec, x))
            if cfg.grad_weight:
                loss = loss + cfg.grad_weight * gradient_l1(rec, x)
            use_adv = disc is not None and step >= cfg.adv_start * cfg.vae_steps
            if use_adv:
                loss = loss - cfg.adv_weight * disc(rec).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            info = {"loss": float(loss.detach()), "l1": float(loss_rec.detach())}
            if use_adv:
                d_loss = F.relu(1 - disc(x)).mean() + F.relu(1 + disc(rec.detach())).mean()
                dopt.zero_grad(set_to_none=True)
                d_loss.backward()
                dopt.step()
                info["d_loss"] = float(d_loss.detach())
            step += 1
            if step % cfg.val_every == 0 and val_tiles is not None:
                metrics = vae_metrics(vae, val_tiles)
                history.append({"step": step, **metrics, "time_s": round(time.perf_counter() - t0, 1)})
                info.update({f"val_{k}": v for k, v in metrics.items()})
                write()
            yield Progress(step, cfg.vae_steps, "vae", info)
    finally:
        if val_tiles is not None and step and (not history or history[-1]["step"] != step):
            metrics = vae_metrics(vae, val_tiles)
            history.append({"step": step, **metrics, "time_s": round(time.perf_counter() - t0, 1)})
        write()
    vae.eval()
    return vae


def encode_latents(vae, vol: dict, zs: list[int], variants: int, device: str = "cpu"):
    """Posterior-mean latents of whole slices, for each dihedral variant.

    Returns ``{v: {z: (C, h, w) float32}}``; yields progress per slice and variant.
    """
    import torch

    d = vae.divisor
    out: dict[int, dict[int, np.ndarray]] = {v: {} for v in range(variants)}
    total, done = len(zs) * variants, 0
    vae.eval()
    with torch.inference_mode():
        for z in zs:
            for v in range(variants):
                img = np.ascontiguousarray(dihedral(vol[z], v))
                h, w = img.shape
                ph, pw = (-h) % d, (-w) % d
                if ph or pw:
                    img = np.pad(img, ((0, ph), (0, pw)), mode="reflect")
                lat = vae.encode(torch.from_numpy(img)[None, None].to(device)).mean[0]
                out[v][z] = lat[:, : h // d, : w // d].float().cpu().numpy()
                done += 1
                yield done, total
    return out


# ------------------------------------------------------------------------------------ denoiser


class LatentBatches:
    """Random latent crops with their masks (or the null condition), for the denoiser."""

    def __init__(self, latents, masks: dict, train_z, crop: int, factor: int, cfg: GeneratorConfig, seed: int):
        self.latents, self.masks, self.train_z = latents, masks, list(train_z)
        self.allowed = [z for z in self.train_z if z in masks]
        self.crop, self.factor, self.cfg = crop, factor, cfg
        self.rng = np.random.default_rng(seed)

    def item(self, z: int, v: int, y: int, x: int, use_mask: bool, c: int):
        lat = self.latents[v][z][:, y : y + c, x : x + c]
        m = None
        if use_mask:
            f = self.factor
            m = dihedral(self.masks[z], v)[y * f : (y + c) * f, x * f : (x + c) * f]
        return lat, m

    def sample(self, batch: int, crop: int | None = None):
        import torch

        from ..models.denoiser import mask_condition

        c = crop or self.crop
        lats, conds = [], []
        for _ in range(batch):
            if self.allowed and self.rng.random() < max(self.cfg.cond_fraction, len(self.allowed) / len(self.train_z)):
                z = self.allowed[self.rng.integers(len(self.allowed))]
            else:
                z = self.train_z[self.rng.integers(len(self.train_z))]
            v = int(self.rng.integers(len(self.latents)))
            _, h, w = self.latents[v][z].shape
            y, x = int(self.rng.integers(0, h - c + 1)), int(self.rng.integers(0, w - c + 1))
            use = z in self.masks and self.rng.random() >= self.cfg.p_uncond
            lat, m = self.item(z, v, y, x, use, c)
            lats.append(torch.from_numpy(np.ascontiguousarray(lat)))
            mt = None if m is None else torch.from_numpy(np.ascontiguousarray(m))[None]
            conds.append(mask_condition(mt, self.factor, (1, c, c)))
        return torch.stack(lats), torch.cat(conds)


def _ema_update(ema, model, decay: float) -> None:
    import torch

    with torch.no_grad():
        for pe, p in zip(ema.parameters(), model.parameters(), strict=True):
            pe.lerp_(p, 1.0 - decay)
        for be, b in zip(ema.buffers(), model.buffers(), strict=True):
            be.copy_(b)


def _val_batch(latents, masks, val_z, crop, factor, seed, n=32):
    """A fixed validation set: latent crops, conditions (masks if allowed), timesteps and noise."""
    import torch

    from ..models.denoiser import mask_condition

    rng = np.random.default_rng(seed + 1)
    g = torch.Generator().manual_seed(seed + 1)
    lats, conds = [], []
    for i in range(n):
        z = val_z[i % len(val_z)]
        _, h, w = latents[0][z].shape
        y, x = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
        lats.append(torch.from_numpy(np.ascontiguousarray(latents[0][z][:, y : y + crop, x : x + crop])))
        if z in masks:
            m = masks[z][y * factor : (y + crop) * factor, x * factor : (x + crop) * factor]
            conds.append(mask_condition(torch.from_numpy(np.ascontiguousarray(m))[None], factor, (1, crop, crop)))
        else:
            conds.append(None)
    lat = torch.stack(lats)
    t = torch.linspace(20, 980, n).long()
    noise = torch.randn(lat.shape, generator=g)
    return lat, conds, t, noise


def _val_loss(model, sched, batch, shift, scale, device) -> dict:
    import torch

    from ..models.denoiser import mask_condition
    from .schedule import training_target

    lat, conds, t, noise = batch
    x0 = (lat - shift) * scale
    xt = sched.add_noise(x0, noise, t)
    target = training_target(sched, x0, noise, t)
    null = mask_condition(None, model.config["factor"], (len(lat), lat.shape[-2], lat.shape[-1]))
    out = {}
    model.eval()
    with torch.inference_mode():
        pu = torch.cat(
            [
                model(xt[i : i + 16].to(device), t[i : i + 16].to(device), null[i : i + 16].to(device))
                for i in range(0, len(lat), 16)
            ]
        ).cpu()
        out["val_loss_uncond"] = float(((pu - target) ** 2).mean())
        have = [i for i, c in enumerate(conds) if c is not None]
        if have:
            cond = torch.cat([conds[i] for i in have])
            pc = model(xt[have].to(device), t[have].to(device), cond.to(device)).cpu()
            out["val_loss_cond"] = float(((pc - target[have]) ** 2).mean())
    model.train()
    return out


def train_denoiser(
    latents,
    masks: dict,
    train_z,
    val_z,
    out_dir: Path,
    cfg: GeneratorConfig,
    vae_card: dict,
    denoiser=None,
    card_extra: dict | None = None,
    device: str = "cpu",
) -> Generator[Progress, None, object]:
    """Train the mask-conditioned denoiser on cached latents; writes ``out_dir/denoiser`` (EMA)."""
    import torch

    from ..models.denoiser import MaskDenoiser
    from .schedule import train_scheduler, training_target
    from .store import save_part

    torch.manual_seed(cfg.seed)
    factor = 2 ** len(vae_card["architecture"]["channels"])
    if denoiser is None:
        denoiser = MaskDenoiser(
            cfg.latent_channels,
            factor,
            tuple(cfg.block_out_channels),
            cfg.layers_per_block,
            tuple(cfg.attention_levels),
        )
    denoiser.to(device).train()
    ema = copy.deepcopy(denoiser).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    sched = train_scheduler(cfg.schedule)
    acp = sched.alphas_cumprod.float()
    opt = torch.optim.AdamW(denoiser.parameters(), lr=cfg.diffusion_lr, weight_decay=1e-4)
    shift, scale = float(vae_card.get("latent_shift", 0.0)), float(vae_card["latent_scale"])
    crop = cfg.latent_crop
    batches = LatentBatches(latents, masks, train_z, crop, factor, cfg, cfg.seed)
    val = _val_batch(latents, masks, list(val_z) or list(train_z)[-4:], crop, factor, cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    t0 = time.perf_counter()
    step, best, history, written = 0, float("inf"), [], False
    base_card = {
        "kind": "denoiser",
        "schedule": {**DEFAULT_SCHEDULE, **cfg.schedule},
        "tile": cfg.tile,
        "scale": cfg.scale,
        "latent_crop": crop,
        "conditioning": {
            "kind": "mask, space-to-depth by the VAE factor (+1 fg / -1 bg) + flag channel",
            "null": "zeros, flag -1",
            "p_uncond": cfg.p_uncond,
        },
        "ema": {"decay": cfg.ema_decay, "weights": "EMA"},
        **(card_extra or {}),
    }

    def write(metrics):
        nonlocal written
        card = {
            **base_card,
            "name": cfg.name or out_dir.name,
            "date": _now(),
            "metrics": metrics,
            "training": {
                **base_card.get("training", {}),
                "steps": step,
                "batch": cfg.diffusion_batch,
                "time_s": round(time.perf_counter() - t0, 1),
                "history": history[-40:],
            },
        }
        save_part(out_dir / "denoiser", ema, card)
        written = True

    try:
        while step < cfg.diffusion_steps and not _out_of_time(t0, cfg.diffusion_minutes):
            for g in opt.param_groups:
                g["lr"] = cfg.diffusion_lr * _lr_factor(
                    step, cfg.diffusion_steps, t0, cfg.diffusion_minutes, cfg.warmup
                )
            small = crop // 2 >= denoiser.divisor and crop % 2 == 0 and batches.rng.random() < cfg.small_crop_p
            lat, cond = (
                batches.sample(cfg.diffusion_batch * 4, crop // 2) if small else batches.sample(cfg.diffusion_batch)
            )
            x0 = (lat - shift) * scale
            noise = torch.randn(x0.shape, generator=gen)
            t = torch.randint(0, sched.config.num_train_timesteps, (len(x0),), generator=gen)
            xt = sched.add_noise(x0, noise, t)
            target = training_target(sched, x0, noise, t)
            pred = denoiser(xt.to(device), t.to(device), cond.to(device))
            err = ((pred - target.to(device)) ** 2).mean((1, 2, 3))
            if cfg.min_snr_gamma:
                snr = acp[t] / (1 - acp[t])
                if sched.config.prediction_type == "v_prediction":
                    w = torch.clamp(snr, max=cfg.min_snr_gamma) / (snr + 1)
                else:
                    w = torch.clamp(snr, max=cfg.min_snr_gamma) / snr
                err = err * w.to(err.device) / w.mean().to(err.device)
            loss = err.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(denoiser.parameters(), 1.0)
            opt.step()
            step += 1
            _ema_update(ema, denoiser, min(cfg.ema_decay, (1 + step) / (10 + step)))
            info = {"loss": float(loss.detach()), "lr": opt.param_groups[0]["lr"]}
            if step % cfg.val_every == 0 or step == cfg.diffusion_steps:
                m = _val_loss(ema, sched, val, shift, scale, device)
                crit = m.get("val_loss_cond", m["val_loss_uncond"])
                history.append({"step": step, **m, "loss": info["loss"], "time_s": round(time.perf_counter() - t0, 1)})
                info.update(m)
                if crit < best:
                    best = crit
                    write({**m, "step": step})
            yield Progress(step, cfg.diffusion_steps, "diffusion", info)
    finally:
        # finished, out of time or stopped: judge the final EMA weights too (if not just done)
        if step and (not history or history[-1]["step"] != step):
            m = _val_loss(ema, sched, val, shift, scale, device)
            history.append({"step": step, **m, "time_s": round(time.perf_counter() - t0, 1)})
            if not written or m.get("val_loss_cond", m["val_loss_uncond"]) < best:
                write({**m, "step": step})
    return ema


# ------------------------------------------------------------------------------- orchestration


def _check_inputs(images, masks):
    shape = tuple(getattr(images, "shape", ()))
    if len(shape) not in (2, 3):
        raise GeneratorDataError(f"images must be a 2D image or a ZYX stack, got shape {shape}")
    if np.dtype(images.dtype).kind not in "uif":
        raise GeneratorDataError(f"images must be numeric, got dtype {images.dtype}")
    if masks is not None and tuple(masks.shape) != shape:
        raise GeneratorDataError(
            f"images have shape {shape} but masks have shape {tuple(masks.shape)}: they must match"
        )


def default_val_slices(n: int, fraction: float = 0.15) -> list[int]:
    """The last ~15 % of a stack (at least one slice when it has four or more)."""
    if n < 4:
        return []
    k = max(1, int(round(n * fraction)))
    return list(range(n - k, n))


def train_generator(
    images,
    masks,
    out_dir: str | Path,
    cfg: GeneratorConfig | None = None,
    *,
    slices: Sequence[int] | None = None,
    val_slices: Sequence[int] | None = None,
    image_slices: Sequence[int] | None = None,
    val_masks: bool | None = None,
    init=None,
    fresh_denoiser: bool = False,
    device: str = "cpu",
) -> Generator[Progress, None, dict]:
    """Train a generator folder ``out_dir`` from ``images`` (Z, Y, X) and ``masks``.

    slices : the only slices whose masks are read (None = every non-validation slice with any
        annotation; ``[]`` = no masks: an unconditional generator).
    val_slices : held-out slices (default: the last ~15 %), never trained on; used to pick checkpoints.
    image_slices : slices whose images train the VAE and denoiser (default: all but ``val_slices``).
    val_masks : read the masks of ``val_slices`` for the conditional validation loss (default: only
        when ``slices`` is None, i.e. the whole volume counts as annotated).
    init : a generator (folder/name) to start from; with ``cfg.vae_steps == 0`` its VAE is kept.
    fresh_denoiser : take only the VAE from ``init`` and train a new denoiser. Use it when
        ``init``'s denoiser learnt from masks this run must not see (an honest low-label generator).
    Returns ``{"vae": card, "denoiser": card, "layout": dict, "path": str}``.
    """
    import torch

    from ..models.store import save_model
    from .layout import fit_layout
    from .store import load_generator, save_layout

    cfg = cfg or GeneratorConfig()
    out_dir = Path(out_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    _check_inputs(images, masks)
    is2d = images.ndim == 2
    n = 1 if is2d else images.shape[0]

    def img(z):
        return images if is2d else images[z]

    val_z = sorted(set(default_val_slices(n) if val_slices is None else val_slices))
    img_z = sorted(set(range(n)) - set(val_z)) if image_slices is None else sorted(set(image_slices))
    for name, zs in (("val_slices", val_z), ("image_slices", img_z)):
        bad = [z for z in zs if z < 0 or z >= n]
        if bad:
            raise GeneratorDataError(f"{name} {bad} are outside the stack (it has {n} slices)")
    if not img_z:
        raise GeneratorDataError("no image slices left to train on")
    if set(img_z) & set(val_z):
        raise GeneratorDataError(f"slices {sorted(set(img_z) & set(val_z))} are both training and validation")
    if masks is None:
        if slices:
            raise GeneratorDataError("slices were given but no masks")
        allowed: list[int] = []
    elif slices is None:
        allowed = [z for z in img_z if np.any(np.asarray(masks if is2d else masks[z]))]
    else:
        allowed = sorted(set(int(z) for z in slices))
        bad = [z for z in allowed if z < 0 or z >= n]
        if bad:
            raise GeneratorDataError(f"slices {bad} are outside the stack (it has {n} slices, 0-{n - 1})")
        leak = [z for z in allowed if z in val_z]
        if leak:
            raise GeneratorDataError(f"mask slices {leak} are also validation slices: choose other slices")
        img_z = sorted(set(img_z) | set(allowed))
    use_val_masks = (slices is None) if val_masks is None else bool(val_masks)
    if masks is None:
        use_val_masks = False

    yield Progress(0, 1, "prepare")
    vol = {z: prepare_slice(img(z), cfg.scale) for z in sorted(set(img_z) | set(val_z))}
    # the only place masks are read: the allowed slices (+ validation slices when permitted)
    mask_of = {z: _prepare_mask(masks if is2d else masks[z], cfg.scale) for z in allowed}
    val_mask_of = {z: _prepare_mask(masks if is2d else masks[z], cfg.scale) for z in val_z} if use_val_masks else {}
    out_dir.mkdir(parents=True, exist_ok=True)
    layout = (
        fit_layout(np.stack([mask_of[z] for z in allowed]), tile=cfg.tile)
        if allowed
        else {"version": 1, "tile": cfg.tile, "slices": [], "n_objects": 0, "objects": []}
    )
    layout["slices"] = allowed
    save_layout(out_dir, layout)
    yield Progress(1, 1, "prepare")

    init_gen = load_generator(init) if init is not None else None
    vae = copy.deepcopy(init_gen.vae) if init_gen is not None else None
    d = 2 ** len(cfg.vae_channels if vae is None else vae.config["channels"])
    hw = next(iter(vol.values())).shape
    if min(hw) < max(cfg.latent_crop * d, 16):
        raise GeneratorDataError(
            f"slices of {hw[0]}x{hw[1]} are smaller than one training tile "
            f"({cfg.latent_crop * d}x{cfg.latent_crop * d})"
        )
    tsz = min(cfg.tile, hw[0] // d * d, hw[1] // d * d)
    vrng = np.random.default_rng(cfg.seed + 7)
    src = val_z or img_z[-2:]
    val_tiles = np.stack(
        [
            vol[z][y : y + tsz, x : x + tsz][None]
            for z in (src * 16)[:16]
            for y, x in [(int(vrng.integers(0, hw[0] - tsz + 1)), int(vrng.integers(0, hw[1] - tsz + 1)))]
        ]
    ).astype(np.float32)

    vae_extra = {}
    if vae is None or cfg.vae_steps > 0:
        vae = yield from train_vae(vol, img_z, val_tiles, out_dir, cfg, vae, device)
    else:
        vae_extra = {
            k: init_gen.vae_card[k]
            for k in ("latent_shift", "latent_scale", "noise_std", "metrics", "training")
            if k in init_gen.vae_card
        }
        vae_extra["parent"] = str(init_gen.path)

    variants = max(1, min(8, cfg.latent_variants))
    enc_z = sorted(set(img_z) | set(val_z))
    enc = encode_latents(vae, vol, enc_z, variants, device)
    while True:
        try:
            done, total = next(enc)
        except StopIteration as stop:
            latents = stop.value
            break
        yield Progress(done, total, "encode")
    if "latent_scale" in vae_extra:
        shift, scale = vae_extra["latent_shift"], vae_extra["latent_scale"]
    else:
        allz = np.concatenate([latents[v][z].ravel() for v in latents for z in img_z])
        shift, scale = float(allz.mean()), float(1.0 / max(allz.std(), 1e-6))
    metrics = vae_extra.get("metrics") or vae_metrics(vae, val_tiles)
    vcard = _vae_card(
        vae,
        cfg,
        {
            "latent_shift": shift,
            "latent_scale": scale,
            "noise_std": vae_extra.get("noise_std", estimate_noise_std(vae, val_tiles)),
            "metrics": metrics,
            "training": vae_extra.get("training") or _read_training(out_dir / "vae"),
            **({"parent": vae_extra["parent"]} if "parent" in vae_extra else {}),
        },
    )
    save_model(out_dir / "vae", vae, vcard)

    den = copy.deepcopy(init_gen.denoiser) if init_gen is not None and not fresh_denoiser else None
    extra = {
        "training": {
            "mask_slices": allowed,
            "image_slices": img_z,
            "val_slices": val_z,
            "val_masks_used": bool(val_mask_of),
            "latent_variants": variants,
            "config": {k: v for k, v in asdict(cfg).items() if k != "notes"},
            **({"init": str(init_gen.path)} if init_gen is not None else {}),
            **({"init_parts": "vae" if fresh_denoiser else "vae+denoiser"} if init_gen is not None else {}),
            **cfg.notes,
        }
    }
    all_masks = {**mask_of, **val_mask_of}
    yield from train_denoiser(latents, all_masks, img_z, val_z, out_dir, cfg, vcard, den, extra, device)
    gen = load_generator(out_dir)
    return {"vae": gen.vae_card, "denoiser": gen.denoiser_card, "layout": gen.layout, "path": str(out_dir)}


def _read_training(folder: Path) -> dict:
    import json

    try:
        return json.loads((folder / "card.json").read_text()).get("training", {})
    except (OSError, ValueError):
        return {}


def train_generator_job(
    images,
    masks,
    out_dir: str | Path,
    cfg: GeneratorConfig | None = None,
    *,
    register_as: str | None = None,
    stop=None,
    **kwargs,
) -> Generator[Progress, None, dict]:
    """:func:`train_generator` with a polite stop and registration (the Train dock's job).

    ``stop`` is a callable checked before each step; when it returns True the training generator
    is closed in the calling thread (the VAE and the best denoiser so far stay written) and the
    job returns with ``stopped=True``. A complete result is copied into the user generators folder
    as ``register_as``. Other keyword arguments go to :func:`train_generator`.

    Returns ``{"path", "registered", "stopped", "stage", "step", "complete"}``.
    """
    from .store import is_generator, load_generator, register_generator

    out_dir = Path(out_dir)
    gen = train_generator(images, masks, out_dir, cfg, **kwargs)
    # closing a stopped run writes its last VAE / best denoiser
    stopped, _, last = yield from stoppable(gen, stop)
    stage, step = (last.stage, last.done) if last is not None else ("prepare", 0)
    complete = is_generator(out_dir)
    if complete:
        try:
            load_generator(out_dir)  # e.g. stopped in the VAE stage: no latent statistics yet
        except ValueError:
            complete = False
    registered = register_generator(out_dir, register_as) if (register_as and complete) else None
    return {"path": out_dir, "registered": registered, "stopped": stopped, "stage": stage, "step": step,
            "complete": complete}
