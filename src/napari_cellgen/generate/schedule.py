"""Noise schedules and samplers (diffusers schedulers, configured from a denoiser card).

The three diffusion pieces stay apart: the scheduler here (parameter-free, configured from
``card["schedule"]``), the network in :mod:`napari_cellgen.models.denoiser`, and the sampling
loop in :mod:`napari_cellgen.generate.sample`.
"""

from __future__ import annotations

DEFAULT_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",  # cosine (Nichol & Dhariwal); diffusers computes it in float64
    "prediction_type": "v_prediction",
}
SAMPLERS = ("dpm++", "ddim", "dpm++sde")
STOCHASTIC = ("dpm++sde",)  # samplers that draw fresh noise at every step


def train_scheduler(schedule: dict | None = None):
    """The DDPM scheduler used for training (``add_noise``, ``get_velocity``)."""
    from diffusers import DDPMScheduler

    cfg = {**DEFAULT_SCHEDULE, **(schedule or {})}
    return DDPMScheduler(**cfg, clip_sample=False)


def sampling_scheduler(kind: str = "dpm++", schedule: dict | None = None):
    """A fast sampler: ``"dpm++"`` (DPM-Solver++ 2M, deterministic), ``"ddim"`` (eta 0) or
    ``"dpm++sde"`` (SDE-DPM-Solver++ 2M: stochastic, fresh noise at every step)."""
    cfg = {**DEFAULT_SCHEDULE, **(schedule or {})}
    kind = (kind or "dpm++").lower()
    if kind in ("dpm++", "dpmsolver++", "dpm", "dpm++sde"):
        from diffusers import DPMSolverMultistepScheduler

        # lambda_min_clipped: recommended for the cosine schedule, whose last steps have near-zero alpha
        return DPMSolverMultistepScheduler(
            **cfg,
            algorithm_type="sde-dpmsolver++" if kind == "dpm++sde" else "dpmsolver++",
            solver_order=2,
            timestep_spacing="trailing",
            lambda_min_clipped=-5.1,
        )
    if kind == "ddim":
        from diffusers import DDIMScheduler

        return DDIMScheduler(**cfg, clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing")
    raise ValueError(f"unknown sampler {kind!r}: use one of {', '.join(SAMPLERS)}")


def draw_noise(shape, generator, offset: float = 0.0):
    """Gaussian noise; with ``offset`` > 0 plus a per-sample, per-channel constant of that std.

    "Offset noise" (Guttenberg 2023): white noise over a 32x32 latent has a per-channel mean of std
    1/32, so a tile's overall level is decided at noise levels so high that min-SNR weighting all but
    skips them, and a network trained that way copies the mean of its initial noise ("lazy DC"). The
    constant is drawn after the white noise from the same generator, so ``offset == 0`` draws exactly
    what plain ``torch.randn`` does.
    """
    import torch

    noise = torch.randn(shape, generator=generator)
    if offset:
        noise = noise + offset * torch.randn((*shape[:2], *([1] * (len(shape) - 2))), generator=generator)
    return noise


def loss_weights(alphas_cumprod, prediction_type: str, gamma: float = 5.0, floor: float = 0.0):
    """Min-SNR-gamma loss weights (Hang et al. 2023) for the given noise levels, at least ``floor``.

    For v-prediction the weight is min(snr, gamma) / (snr + 1): about snr itself at high noise, so
    the steps that decide a tile's overall level (pixel snr ~ 0.01 on a 32x32 latent) get almost none
    unless ``floor`` lifts them. The floor lifts the lowest noise levels too (gamma / (snr + 1) there).
    """
    import torch

    snr = alphas_cumprod / (1 - alphas_cumprod)
    w = torch.clamp(snr, max=gamma) / ((snr + 1) if prediction_type == "v_prediction" else snr)
    return torch.clamp(w, min=floor)


def noise_offset(card: dict | None) -> float:
    """The offset-noise std a denoiser was trained with (0 for cards before it existed)."""
    return float(((card or {}).get("noise") or {}).get("offset", 0.0) or 0.0)


def training_target(scheduler, latents, noise, timesteps):
    """What the network learns to predict for ``scheduler.config.prediction_type``."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    if kind == "sample":
        return latents
    raise ValueError(f"unsupported prediction type {kind!r}")
