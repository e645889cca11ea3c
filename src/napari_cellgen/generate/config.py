"""A generator's training configuration and the data preparation its stages share."""

from __future__ import annotations

import datetime as _dt
import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..segment.preprocess import normalize, resize, scaled_shape
from .schedule import DEFAULT_SCHEDULE

# dihedral variants (rot90 count, flip left-right); the first four cover all four rotations
VARIANTS = [(0, False), (1, True), (2, False), (3, True), (1, False), (0, True), (3, False), (2, True)]


ADAPT_MODES = ("networks", "acquisition")


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
    # min-SNR weights high-noise steps near zero (v-prediction: snr / (snr + 1)), and those steps decide
    # a tile's overall grey level: ``snr_weight_floor`` is the least weight any step gets (it lifts the
    # lowest noise levels too, which min-SNR also down-weights). ``offset_noise``
    # adds a per-sample, per-channel constant of this std to the training noise (and the sampler's initial
    # noise), so the overall level is decided at noise levels the network learns (docs/generation.md)
    snr_weight_floor: float = 0.0
    offset_noise: float = 0.0
    diffusion_minutes: float | None = None
    schedule: dict = field(default_factory=lambda: dict(DEFAULT_SCHEDULE))
    # wall-clock budget of the whole job (minutes; None or 0 = run the step counts, which stay upper
    # bounds): a VAE being trained gets ``vae_share`` of it, the denoiser what is left after the VAE
    # and the latent encoding. ``vae_minutes`` / ``diffusion_minutes`` can only shorten a stage.
    minutes: float | None = None
    vae_share: float = 0.4
    # common
    scale: float = 1.0  # the generator's pixel size relative to the input (0.5 = half resolution)
    # "bf16": the VAE's and the denoiser's forward passes in bfloat16 autocast (weights, optimizer and
    # losses stay float32), as ``cellgen train --precision bf16``: on a CPU with native bf16, VAE steps
    # 1.38x faster, denoiser steps 1.06x (benchmarks/generator_step_speed.py)
    precision: str = "fp32"
    # starting from a generator: "networks" fine-tunes its VAE/denoiser on the images (and masks);
    # "acquisition" keeps them and fits the user's microscope (pixel size, blur, tone, noise; adapt.py)
    adapt: str = "networks"
    tile: int = 256
    val_every: int = 250
    warmup: int = 100
    seed: int = 0
    threads: int | None = None
    name: str = ""
    notes: dict = field(default_factory=dict)

    def validate(self) -> GeneratorConfig:
        """Raise ``ValueError`` naming the first bad option (as ``cellgen train-generator`` spells it)."""
        from .._checks import choice, number
        from ..train.loop import TRAIN_PRECISIONS

        number(self.vae_steps, "--vae-steps", lo=0, integer=True)
        for key in ("diffusion_steps", "vae_batch", "vae_patch", "diffusion_batch", "latent_crop", "val_every",
                    "layers_per_block", "latent_channels", "vae_blocks"):
            number(getattr(self, key), "--" + key.replace("_", "-"), lo=1, integer=True)
        number(self.latent_variants, "--latent-variants", lo=1, hi=len(VARIANTS), integer=True)
        number(self.tile, "--tile", lo=1, integer=True)
        number(self.scale, "--scale", lo=0, hi=1, lo_open=True)
        choice(self.precision, "--precision", TRAIN_PRECISIONS)
        choice(self.adapt, "--adapt", ADAPT_MODES)
        number(self.small_crop_p, "--small-crop-p", lo=0, hi=1)
        number(self.adv_weight, "--adv-weight", lo=0)
        number(self.snr_weight_floor, "--snr-weight-floor", lo=0, hi=1)
        number(self.offset_noise, "--offset-noise", lo=0, hi=1)
        for key in ("vae_lr", "diffusion_lr"):
            number(getattr(self, key), key.replace("_", " "), lo=0, hi=1, lo_open=True)
        for key in ("vae_minutes", "diffusion_minutes"):
            number(getattr(self, key), "--" + key.replace("_", "-"), lo=0, lo_open=True, none_ok=True)
        number(self.minutes, "--minutes", lo=0, none_ok=True)
        number(self.vae_share, "vae share", lo=0, hi=1, lo_open=True, hi_open=True)
        number(self.seed, "--seed", lo=0, hi=2**63 - 1, integer=True)
        number(self.threads, "--threads", lo=1, integer=True, none_ok=True)
        for key in ("vae_channels", "block_out_channels"):
            values = tuple(getattr(self, key))
            if not values:
                raise ValueError(f"{key.replace('_', ' ')} must list at least one channel count")
            for v in values:
                number(v, key.replace("_", " "), lo=1, integer=True)
        return self


# bytes one generated sample needs while sampling, per pixel: the uint8 image, int32 labels of a drawn
# layout, the boolean mask and its float32 conditioning (kept for all N samples until they are written)
SAMPLE_BYTES_PER_PIXEL = 1 + 4 + 1 + 4


@dataclass
class SampleOptions:
    """What ``cellgen sample`` / ``synth`` (and the Generate dock) ask of a generator."""

    n: int = 4
    steps: int = 25
    guidance: float = 2.0
    seed: int = 0
    batch: int = 4
    pixel_noise: float | None = None  # None: the VAE's measured noise

    def validate(self) -> SampleOptions:
        from .._checks import number

        number(self.n, "--n", lo=1, integer=True)
        number(self.steps, "--steps", lo=1, hi=1000, integer=True)
        number(self.guidance, "--guidance", lo=0, hi=100)
        number(self.seed, "--seed", lo=0, hi=2**63 - 1, integer=True)
        number(self.batch, "--batch", lo=1, hi=4096, integer=True)
        number(self.pixel_noise, "--pixel-noise", lo=0, hi=2, none_ok=True)
        return self

    def check_memory(self, count: int, side: tuple[int, int], latent_channels: int, factor: int,
                     available: int | None = None) -> int:
        """Refuse (``MemoryError`` with what to do) a job that cannot fit in RAM; returns its bytes."""
        h, w = side
        need = count * (h * w * SAMPLE_BYTES_PER_PIXEL + latent_channels * (h // factor) * (w // factor) * 4)
        if available is None:
            from ..io.stack import available_memory

            available = available_memory()
        if available is not None and need > available:
            from .._checks import TooBig

            raise TooBig(
                f"{count} samples of {h}x{w} need about {need / 1e9:.1f} GB of memory and about "
                f"{available / 1e9:.1f} GB are free: ask for fewer (--n) and run several jobs"
            )
        return need


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


def autocast(torch, precision: str, device: str = "cpu"):
    """The forward passes' arithmetic: bfloat16 autocast for "bf16", else nothing."""
    import contextlib

    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


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
