"""Sampling: masks (given, freshly drawn, or none) -> latents by guided denoising -> uint8 images.

:func:`sample` is a progress generator (one yield per denoising step, so a widget can show
progress and stop between steps) that returns :class:`Samples`; :func:`sample_sync` drives it.
The same seed gives the same output: the initial noise of all N samples is drawn up front from
one seeded ``torch.Generator`` (so batch size does not change it), the layouts from a seeded numpy
generator, and the samplers are deterministic (DPM-Solver++ / DDIM with eta 0).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import NamedTuple

import numpy as np

from .._progress import Progress, run
from .pixel_noise import add_pixel_noise, image_seed

DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 2.0


class MaskError(ValueError):
    """Conditioning masks that cannot be used as given; the message says what to change."""


class Samples(NamedTuple):
    images: np.ndarray  # (N, H, W) uint8
    masks: np.ndarray | None  # (N, H, W) the conditioning masks (labels), None when unconditional


def check_masks(masks, divisor: int = 32, allow_empty: bool = False) -> np.ndarray:
    """Validate conditioning masks; returns a (N, H, W) bool array (non-zero = mitochondrion)."""
    if masks is None:
        raise MaskError("no masks given")
    arr = np.asarray(masks)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise MaskError(f"masks must be a 2D mask (Y, X) or a stack (N, Y, X), got shape {arr.shape}")
    if 0 in arr.shape:
        raise MaskError(f"the mask stack is empty (shape {arr.shape}): give at least one 256x256 mask")
    if arr.dtype.kind not in "biu":
        raise MaskError(
            f"masks must be boolean or integer labels (0 = background), got dtype {arr.dtype}; "
            "for a probability map, threshold it first (e.g. mask = prob > 0.5)"
        )
    if arr.dtype.kind == "i" and arr.min() < 0:  # the same rule as training (train/data.py)
        raise MaskError("the masks have negative values: use 0 for background and positive labels")
    h, w = arr.shape[-2:]
    if h % divisor or w % divisor:
        raise MaskError(
            f"masks must be 256x256 tiles (or have sides that are multiples of {divisor}), got {h}x{w}; "
            "crop or pad them first"
        )
    fg = arr != 0
    empty = [i for i in range(len(fg)) if not fg[i].any()]
    if empty and not allow_empty:
        shown = ", ".join(map(str, empty[:10])) + (" ..." if len(empty) > 10 else "")
        raise MaskError(
            f"mask slice(s) {shown} contain no mitochondria: draw some (any non-zero label), "
            "or allow background-only images (allow_empty=True, --allow-empty)"
        )
    return fg


def denoise(denoiser, scheduler, noise, cond, steps: int, guidance: float, generator=None):
    """The sampling loop: yields after each step, returns the clean latents.

    ``cond`` is the conditioning (B, C, h, w) or None (unconditional). With a condition and
    ``guidance != 1`` the conditional and null predictions are combined (classifier-free
    guidance) in one batched forward pass.
    """
    import torch

    from ..models.denoiser import mask_condition, null_like

    b, _, h, w = noise.shape
    factor = denoiser.config["factor"]
    null = mask_condition(None, factor, (b, h, w)).to(noise.device) if cond is None else null_like(cond)
    scheduler.set_timesteps(steps)
    x = noise * scheduler.init_noise_sigma
    for i, t in enumerate(scheduler.timesteps):
        xin = scheduler.scale_model_input(x, t)
        tt = torch.full((b,), int(t), dtype=torch.long, device=x.device)
        if cond is None or guidance == 0:
            pred = denoiser(xin, tt, null)
        elif guidance == 1:
            pred = denoiser(xin, tt, cond)
        else:
            both = denoiser(torch.cat([xin, xin]), torch.cat([tt, tt]), torch.cat([cond, null]))
            pc, pu = both.chunk(2)
            pred = pu + guidance * (pc - pu)
        x = scheduler.step(pred, t, x, generator=generator).prev_sample
        yield i + 1
    return x


def decode_latents(gen, z_norm):
    """Normalised latents -> images in [-1, 1] (float tensor)."""
    vc = gen.vae_card
    z = z_norm / float(vc["latent_scale"]) + float(vc.get("latent_shift", 0.0))
    return gen.vae.decode(z).clamp(-1, 1)


def to_uint8(x, grey_range=None) -> np.ndarray:
    """[-1, 1] tensor (B, 1, H, W) -> uint8 (B, H, W).

    ``grey_range`` (lo, hi): the grey levels that [-1, 1] stood for in the training images (their 1st
    and 99th percentiles, the VAE card's ``grey_range``), so generated images get the real data's
    contrast back instead of being stretched over 0-255. None: -1 -> 0, 1 -> 255.
    """
    arr = x[:, 0].float().cpu().numpy()
    lo, hi = (0.0, 255.0) if grey_range is None else (float(grey_range[0]), float(grey_range[1]))
    return np.round(lo + (arr + 1) * (0.5 * (hi - lo))).clip(0, 255).astype(np.uint8)


def sample(
    gen,
    masks=None,
    n: int | None = None,
    *,
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    seed: int = 0,
    sampler: str = "dpm++",
    pairs: bool = True,
    allow_empty: bool = False,
    shape: tuple[int, int] | None = None,
    batch_size: int = 4,
    pad: bool = False,
    pixel_noise: float | None = None,
    acquisition: bool = True,
    noise_tails: bool = False,
) -> Generator[Progress, None, Samples]:
    """Generate EM images.

    - ``masks`` (N, H, W) or (H, W) labels: one image per mask, pixel-aligned with it.
    - ``masks=None, pairs=True``: ``n`` new (image, mask) pairs, masks drawn from the generator's
      fitted layout statistics.
    - ``masks=None, pairs=False``: ``n`` unconditional images (``Samples.masks`` is None).

    ``pixel_noise``: std (in [-1, 1] units) of white pixel noise added to the decoded images,
    sampling the VAE's observation model; None = the VAE card's noise (``noise_psd``, coloured, where
    fitted, else white of ``noise_std``; see ``pixel_noise.py``), 0 = none.
    ``noise_tails``: the noise is not clipped back into the training range [-1, 1] (only into 0-255).
    ``pad=True`` accepts masks of any size: they are padded with background up to a multiple of
    the generator's divisor and the images cropped back (for a Labels layer of any shape).
    ``gen`` is a :class:`~napari_cellgen.generate.store.LatentGenerator` (or a name/folder to load).
    A generator adapted to a microscope (``gen.acquisition``, see ``adapt.py``) works in that
    microscope's pixels: masks and ``shape`` are in them, tiles are generated at the generator's own
    pixel size and rendered through the fitted acquisition model (``acquisition=False``: not).
    Yields :class:`Progress` (stage ``"sample"``) per denoising step; returns :class:`Samples`.
    """
    import torch

    from ..models.denoiser import mask_condition
    from .layout import has_objects, sample_layouts
    from .schedule import STOCHASTIC, draw_noise, noise_offset, sampling_scheduler
    from .store import GeneratorError, LatentGenerator, load_generator

    if not isinstance(gen, LatentGenerator):
        gen = load_generator(gen)
    if acquisition and gen.acquisition:
        return (yield from _sample_acquired(gen, masks, n, seed=seed, pairs=pairs, allow_empty=allow_empty,
                                            shape=shape, steps=steps, guidance=guidance, sampler=sampler,
                                            batch_size=batch_size, pixel_noise=pixel_noise,
                                            noise_tails=noise_tails))
    if steps < 1 or steps > 1000:
        raise ValueError(f"steps must be between 1 and 1000, got {steps}")
    if guidance < 0:
        raise ValueError(f"guidance must be >= 0, got {guidance}")
    labels = None
    crop_to = None
    if masks is not None:
        labels = np.asarray(masks) if np.asarray(masks).ndim == 3 else np.asarray(masks)[None]
        if pad and labels.ndim == 3 and labels.size:
            h, w = labels.shape[-2:]
            ph, pw = (-h) % gen.divisor, (-w) % gen.divisor
            if ph or pw:
                crop_to = (h, w)
                masks = np.pad(labels, ((0, 0), (0, ph), (0, pw)))
        fg = check_masks(masks, gen.divisor, allow_empty)
    else:
        n = 1 if n is None else int(n)
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        shape = tuple(shape or (gen.tile, gen.tile))
        if shape[0] % gen.divisor or shape[1] % gen.divisor:
            raise ValueError(f"image sides must be multiples of {gen.divisor}, got {shape}")
        if pairs:
            if not has_objects(gen.layout):
                raise GeneratorError(
                    f"generator {gen.name!r} has no mask-layout statistics (it saw no masks): it can only "
                    "sample from given masks or unconditionally"
                )
            labels = sample_layouts(gen.layout, n, shape, seed)
            fg = labels != 0
        else:
            fg = None
    sigma = float(gen.vae_card.get("noise_std", 0.0)) if pixel_noise is None else float(pixel_noise)
    psd = gen.vae_card.get("noise_psd") if pixel_noise is None else None  # the card's noise: coloured if fitted
    if sigma < 0:
        raise ValueError(f"pixel_noise must be >= 0, got {pixel_noise}")
    count = len(fg) if fg is not None else n
    hw = fg.shape[-2:] if fg is not None else shape
    factor = gen.factor
    lat_shape = (count, gen.vae.config["latent_channels"], hw[0] // factor, hw[1] // factor)
    g = torch.Generator().manual_seed(int(seed))
    noise = draw_noise(lat_shape, g, noise_offset(gen.denoiser_card))
    batches = [range(i, min(i + batch_size, count)) for i in range(0, count, batch_size)]
    total = len(batches) * (steps + 1)
    done = 0
    out = np.zeros((count, *hw), np.uint8)
    yield Progress(0, total, "sample")
    # inference mode is entered around each computation, never across a ``yield``: a job
    # abandoned at a yield (Cancel) must not leave its thread (a reused pool thread) in it
    device = next(gen.denoiser.parameters()).device  # load_generator(device=...): noise drawn on the CPU
    for idx in batches:
        sl = slice(idx.start, idx.stop)
        with torch.inference_mode():
            cond = None
            if fg is not None:
                cond = mask_condition(torch.from_numpy(fg[sl]), factor, (len(idx), *lat_shape[2:])).to(device)
            sched = sampling_scheduler(sampler, gen.denoiser_card.get("schedule"))
            # a stochastic sampler's step noise: one seeded stream per image (independent of the batch size)
            step_g = ([torch.Generator(device).manual_seed(image_seed(seed, i) ^ 0x5DE) for i in idx]
                      if sampler.lower() in STOCHASTIC else g)
            loop = denoise(gen.denoiser, sched, noise[sl].to(device), cond, steps, guidance, generator=step_g)
        while True:
            try:
                with torch.inference_mode():
                    next(loop)
            except StopIteration as stop:
                z = stop.value
                break
            done += 1
            yield Progress(done, total, "sample")
        with torch.inference_mode():
            out[sl] = to_uint8(add_pixel_noise(decode_latents(gen, z), sigma, seed, idx.start, not noise_tails, psd),
                               gen.vae_card.get("grey_range"))
        done += 1
        yield Progress(done, total, "sample")
    if crop_to is not None:
        out = np.ascontiguousarray(out[:, : crop_to[0], : crop_to[1]])
    return Samples(out, labels)


def _sample_acquired(gen, masks, n, *, seed, pairs, allow_empty, shape, **kw):
    """:func:`sample` for a generator with an acquisition model: generate at its pixels, render to the user's."""
    from .acquire import apply_acquisition, upsample_labels

    acq = gen.acquisition
    s = float(acq["scale"])

    def gen_side(v: int) -> int:
        return max(gen.divisor, int(round(v / s)))

    if masks is not None:
        labels = np.asarray(masks) if np.asarray(masks).ndim == 3 else np.asarray(masks)[None]
        check_masks(labels, 1, allow_empty)
        h, w = labels.shape[-2:]
        up = np.stack([upsample_labels(m, (gen_side(h), gen_side(w))) for m in labels])
        res = yield from sample(gen, up, steps=kw["steps"], guidance=kw["guidance"], seed=seed,
                                sampler=kw["sampler"], allow_empty=allow_empty, batch_size=kw["batch_size"],
                                pad=True, pixel_noise=kw["pixel_noise"], acquisition=False,
                                noise_tails=kw["noise_tails"])
        images, _ = apply_acquisition(res.images, None, acq, seed, size=(h, w))
        return Samples(images, labels)
    h, w = tuple(shape or (gen.tile, gen.tile))
    gh, gw = (-(-gen_side(v) // gen.divisor) * gen.divisor for v in (h, w))
    res = yield from sample(gen, None, n, seed=seed, pairs=pairs, shape=(gh, gw), acquisition=False, **kw)
    images, labels = apply_acquisition(res.images, res.masks, acq, seed, size=(round(gh * s), round(gw * s)))
    images = np.ascontiguousarray(images[:, :h, :w])
    labels = None if labels is None else np.ascontiguousarray(labels[:, :h, :w])
    return Samples(images, labels)


def sample_sync(gen, masks=None, n=None, callback=None, **kw) -> Samples:
    """Synchronous :func:`sample` for scripts and tests."""
    return run(sample(gen, masks, n, **kw), callback)
