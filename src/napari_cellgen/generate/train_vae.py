"""Stage 1 of a generator: the VAE (image <-> latent), trained on images only."""

from __future__ import annotations

import math
import time
from collections.abc import Generator
from pathlib import Path

import numpy as np

from .._progress import Progress
from .config import GeneratorConfig, _lr_factor, _now, _out_of_time, autocast, dihedral


def vae_card(vae, cfg: GeneratorConfig, extra: dict) -> dict:
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
        rec = _reconstruct(vae, x).clamp(-1, 1)
        mse = float(((rec - x) ** 2).mean())
        out = {
            "psnr": 10 * math.log10(4.0 / max(mse, 1e-12)),
            "ssim": float(ssim(rec, x)),
            "l1": float((rec - x).abs().mean()),
        }
    vae.train()
    return out


def _reconstruct(vae, x):
    """Posterior-mean reconstructions of CPU tiles ``x`` (N, 1, H, W), on the VAE's device; CPU out."""
    import torch

    dev = next(vae.parameters()).device
    return torch.cat([vae.decode(vae.encode(x[i : i + 8].to(dev)).mean).float().cpu() for i in range(0, len(x), 8)])


def _fine_std(a) -> float:
    """Robust std of white noise in (N, H, W) images: MAD of neighbouring-pixel differences / sqrt 2."""
    import torch

    d = torch.cat([(a[:, :, 1:] - a[:, :, :-1]).flatten(), (a[:, 1:, :] - a[:, :-1, :]).flatten()])
    return float(d.abs().median()) / 0.6745 / math.sqrt(2)


def estimate_noise_std(vae, tiles) -> float:
    """Pixel noise to add to decoded images so their finest detail matches real EM.

    The robust (MAD) std of neighbouring-pixel differences, a white-noise measure that edges barely
    move, is taken of the real tiles and of their reconstructions; the added noise makes up the
    difference in variance (``sqrt(real^2 - rec^2)``). A mean decoder (L1 only) reproduces almost no
    fine texture, so this is close to the residual's noise; a decoder trained with the adversarial
    loss draws some texture itself and gets less noise on top. Sampling adds it (the VAE's Gaussian
    observation model).
    """
    import torch

    vae.eval()
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(tiles, np.float32))
        rec = _reconstruct(vae, x)
        real, dec = _fine_std(x[:, 0]), _fine_std(rec[:, 0])
        sigma = math.sqrt(max(0.0, real**2 - dec**2))
    vae.train()
    return sigma


def estimate_noise_psd(vae, tiles) -> dict:
    """The VAE card's ``noise_psd``: the power real tiles have and their reconstructions lack.

    Sampling draws pixel noise of this spectrum instead of white noise of ``noise_std`` (on held-out
    Lucchi tiles a classifier told generated from real tiles at 0.887 instead of 0.921;
    ``benchmarks/probes/denoiser_dc_choice.py``, rule 3). See ``pixel_noise.py``.
    """
    import torch

    from .pixel_noise import fit_noise_psd

    vae.eval()
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(tiles, np.float32))
        rec = _reconstruct(vae, x).clamp(-1, 1)
    vae.train()
    return fit_noise_psd(x[:, 0].numpy(), rec[:, 0].numpy())


def _adaptive_weight(loss_rec, loss_adv, last_weight) -> float:
    """VQGAN's balance: |grad of the reconstruction loss| / |grad of the adversarial loss| at the last layer."""
    import torch

    g_rec = torch.autograd.grad(loss_rec, last_weight, retain_graph=True)[0]
    g_adv = torch.autograd.grad(loss_adv, last_weight, retain_graph=True)[0]
    return float((g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, 1e4))


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

    from ..models.vae import ConvVAE, DiagonalGaussian, PatchDiscriminator, gradient_l1, ssim
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
    gen = torch.Generator(device=torch.device(device)).manual_seed(cfg.seed)  # the posterior noise's device
    patch = min(cfg.vae_patch, *vol[train_z[0]].shape) // vae.divisor * vae.divisor
    t0 = time.perf_counter()
    step, history, metrics = 0, [], {}
    stopped_by = "closed"  # until the loop ends by itself: "steps" or "time"

    def write():
        card = vae_card(
            vae,
            cfg,
            {
                "metrics": {**metrics, "step": step},
                "training": {
                    "steps": step,
                    "steps_bound": cfg.vae_steps,
                    "minutes": cfg.vae_minutes,
                    "stopped_by": stopped_by,
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
        # the time is checked before every step (after the first: a budget always buys one step)
        while step < cfg.vae_steps and not (step and _out_of_time(t0, cfg.vae_minutes)):
            for g in opt.param_groups:
                g["lr"] = cfg.vae_lr * _lr_factor(step, cfg.vae_steps, t0, cfg.vae_minutes, cfg.warmup)
            x = torch.from_numpy(_crop_batch(vol, train_z, patch, cfg.vae_batch, rng)).to(device)
            with autocast(torch, cfg.precision, device):
                rec, post = vae(x, generator=gen)
            rec, post = rec.float(), DiagonalGaussian(torch.cat([post.mean, post.logvar], 1).float())
            loss_rec = (rec - x).abs().mean()
            loss = loss_rec + cfg.kl_weight * post.kl()
            if cfg.ssim_weight:
                loss = loss + cfg.ssim_weight * (1 - ssim(rec, x))
            if cfg.grad_weight:
                loss = loss + cfg.grad_weight * gradient_l1(rec, x)
            # the adversarial loss joins after adv_start of the run (of the steps or of the time budget)
            use_adv = disc is not None and (
                step >= cfg.adv_start * cfg.vae_steps
                or bool(cfg.vae_minutes) and time.perf_counter() - t0 >= cfg.adv_start * 60 * cfg.vae_minutes
            )
            if use_adv:
                with autocast(torch, cfg.precision, device):
                    fake = disc(rec)
                g_loss = -fake.float().mean()
                lam = _adaptive_weight(loss, g_loss, vae.decoder[-1].weight)
                loss = loss + cfg.adv_weight * lam * g_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            info = {"loss": float(loss.detach()), "l1": float(loss_rec.detach())}
            if use_adv:
                with autocast(torch, cfg.precision, device):
                    real_s, fake_s = disc(x), disc(rec.detach())
                d_loss = F.relu(1 - real_s.float()).mean() + F.relu(1 + fake_s.float()).mean()
                dopt.zero_grad(set_to_none=True)
                d_loss.backward()
                dopt.step()
                info["d_loss"] = float(d_loss.detach())
                info["adv_lambda"] = lam
            step += 1
            if step % cfg.val_every == 0 and val_tiles is not None:
                metrics = vae_metrics(vae, val_tiles)
                history.append({"step": step, **metrics, "time_s": round(time.perf_counter() - t0, 1)})
                info.update({f"val_{k}": v for k, v in metrics.items()})
                write()
            if cfg.vae_minutes:
                info["time_left_s"] = max(0.0, 60 * cfg.vae_minutes - (time.perf_counter() - t0))
            yield Progress(step, cfg.vae_steps, "vae", info)
        stopped_by = "steps" if step >= cfg.vae_steps else "time"
    finally:
        if val_tiles is not None and step and (not history or history[-1]["step"] != step):
            metrics = vae_metrics(vae, val_tiles)
            history.append({"step": step, **metrics, "time_s": round(time.perf_counter() - t0, 1)})
        write()
    vae.eval()
    return vae
