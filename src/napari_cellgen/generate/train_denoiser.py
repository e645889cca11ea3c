"""Stage 2 of a generator: cached latents and the mask-conditioned latent denoiser (EMA, min-SNR)."""

from __future__ import annotations

import copy
import time
from collections.abc import Generator
from pathlib import Path

import numpy as np

from .._progress import Progress
from ..train.ema import ema_decay, ema_update
from .config import GeneratorConfig, _lr_factor, _now, _out_of_time, autocast, dihedral
from .schedule import DEFAULT_SCHEDULE, draw_noise, loss_weights


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


def _val_batch(latents, masks, val_z, crop, factor, seed, n=32, offset=0.0):
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
    noise = draw_noise(lat.shape, g, offset)
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
    val = _val_batch(latents, masks, list(val_z) or list(train_z)[-4:], crop, factor, cfg.seed,
                     offset=cfg.offset_noise)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    t0 = time.perf_counter()
    step, best, history, written = 0, float("inf"), [], 0
    stopped_by = "closed"  # until the loop ends by itself: "steps" or "time"
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
        "noise": {"offset": cfg.offset_noise, "snr_weight_floor": cfg.snr_weight_floor},
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
                "steps": step,  # of these weights (the best validated EMA so far)
                **run_record(),
                "batch": cfg.diffusion_batch,
                "time_s": round(time.perf_counter() - t0, 1),
                "history": history[-40:],
            },
        }
        save_part(out_dir / "denoiser", ema, card)
        written = step

    def run_record():
        """What the run did so far, whichever weights are kept: steps done, budget, why it ended."""
        minutes = None if cfg.diffusion_minutes is None else round(cfg.diffusion_minutes, 4)
        return {"steps_done": step, "steps_bound": cfg.diffusion_steps, "minutes": minutes, "stopped_by": stopped_by}

    try:
        # the time is checked before every step (after the first: a budget always buys one step)
        while step < cfg.diffusion_steps and not (step and _out_of_time(t0, cfg.diffusion_minutes)):
            for g in opt.param_groups:
                g["lr"] = cfg.diffusion_lr * _lr_factor(
                    step, cfg.diffusion_steps, t0, cfg.diffusion_minutes, cfg.warmup
                )
            small = crop // 2 >= denoiser.divisor and crop % 2 == 0 and batches.rng.random() < cfg.small_crop_p
            lat, cond = (
                batches.sample(cfg.diffusion_batch * 4, crop // 2) if small else batches.sample(cfg.diffusion_batch)
            )
            x0 = (lat - shift) * scale
            noise = draw_noise(x0.shape, gen, cfg.offset_noise)
            t = torch.randint(0, sched.config.num_train_timesteps, (len(x0),), generator=gen)
            xt = sched.add_noise(x0, noise, t)
            target = training_target(sched, x0, noise, t)
            with autocast(torch, cfg.precision, device):
                pred = denoiser(xt.to(device), t.to(device), cond.to(device))
            err = ((pred.float() - target.to(device)) ** 2).mean((1, 2, 3))
            if cfg.min_snr_gamma:
                w = loss_weights(acp[t], sched.config.prediction_type, cfg.min_snr_gamma, cfg.snr_weight_floor)
                err = err * w.to(err.device) / w.mean().to(err.device)
            loss = err.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(denoiser.parameters(), 1.0)
            opt.step()
            step += 1
            ema_update(ema, denoiser, ema_decay(cfg.ema_decay, step))
            info = {"loss": float(loss.detach()), "lr": opt.param_groups[0]["lr"]}
            if step % cfg.val_every == 0 or step == cfg.diffusion_steps:
                m = _val_loss(ema, sched, val, shift, scale, device)
                crit = m.get("val_loss_cond", m["val_loss_uncond"])
                history.append({"step": step, **m, "loss": info["loss"], "time_s": round(time.perf_counter() - t0, 1)})
                info.update(m)
                if crit < best:
                    best = crit
                    write({**m, "step": step})
            if cfg.diffusion_minutes:
                info["time_left_s"] = max(0.0, 60 * cfg.diffusion_minutes - (time.perf_counter() - t0))
            yield Progress(step, cfg.diffusion_steps, "diffusion", info)
        stopped_by = "steps" if step >= cfg.diffusion_steps else "time"
    finally:
        # finished, out of time or stopped: judge the final EMA weights too (if not just done)
        if step and (not history or history[-1]["step"] != step):
            m = _val_loss(ema, sched, val, shift, scale, device)
            history.append({"step": step, **m, "time_s": round(time.perf_counter() - t0, 1)})
            if not written or m.get("val_loss_cond", m["val_loss_uncond"]) < best:
                write({**m, "step": step})
        if written and written != step:  # earlier weights kept: their card still tells how the run ended
            _update_training(out_dir / "denoiser", run_record())
    return ema


def _update_training(folder: Path, fields: dict) -> None:
    """Merge ``fields`` into the ``training`` section of ``folder``'s card (weights untouched)."""
    import json

    from ..models.store import CARD, atomic_write_bytes

    card = json.loads((folder / CARD).read_text())
    card["training"] = {**card.get("training", {}), **fields}
    atomic_write_bytes(folder / CARD, json.dumps(card, indent=2, default=str).encode())
