"""Training a generator: VAE -> cached latents -> mask-conditioned denoiser, as progress generators.

The low-label design (issue 6) is explicit in :func:`train_generator`: ``images`` may be a whole
volume, but only the masks of ``slices`` are ever read (``masks[z]`` for ``z`` in ``slices``). The
VAE and the denoiser learn from every image slice; a slice without an allowed mask is always shown
to the denoiser with the null condition, so it teaches the unconditional model (which classifier-free
guidance needs anyway) and the masks of ``slices`` teach the conditioning. The mask-layout
statistics are fitted on the allowed masks only. ``init`` starts from another generator (e.g. an
unconditional one trained once on all images) and, with ``vae_steps=0``, keeps its VAE: the cheap
way to make one k-slice generator per annotation set.

``cfg.minutes`` is a wall-clock budget for the whole job: a VAE being trained gets
``cfg.vae_share`` of it, the denoiser whatever is left once the VAE and the latent encoding are
done (all of it when ``init``'s VAE is kept). Each stage checks the time before every step (a
stage always gets at least one step); the step counts become upper bounds and the cards record
the budget, the steps done and why each stage stopped ("steps", "time" or "closed").

Stages yield ``Progress(done, total, stage, info)`` with stage "prepare", "vae", "encode",
"diffusion". Closing the generator between steps leaves the last VAE / best denoiser written
(atomically); a folder is a complete generator once ``layout.json``, ``vae/`` (with latent
statistics) and ``denoiser/`` exist.

This module is the orchestration and the dock's job; the stages live in :mod:`.train_vae` and
:mod:`.train_denoiser`, their shared configuration and data preparation in :mod:`.config`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from .._progress import Progress, stoppable
from ..segment.preprocess import percentile_range
from .config import VARIANTS, GeneratorConfig, GeneratorDataError, _prepare_mask, dihedral, prepare_slice
from .train_denoiser import LatentBatches, encode_latents, train_denoiser
from .train_vae import estimate_noise_psd, estimate_noise_std, train_vae, vae_card, vae_metrics

__all__ = ["VARIANTS", "GeneratorConfig", "GeneratorDataError", "LatentBatches", "default_val_slices", "dihedral",
           "encode_latents", "estimate_noise_std", "prepare_slice", "slice_grey_levels", "train_denoiser",
           "train_generator", "train_generator_job", "train_vae", "training_grey_range", "vae_metrics"]

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


def slice_grey_levels(raw) -> tuple[float, float] | None:
    """The grey levels ``prepare_slice`` maps to -1 and 1 (its 1-99 % ``percentile_range``) of an 8-bit
    slice; None for other dtypes."""
    raw = np.asarray(raw)
    return tuple(float(v) for v in percentile_range(raw, 1.0, 99.0)) if raw.dtype == np.uint8 else None


def training_grey_range(levels) -> list[float] | None:
    """The grey levels that [-1, 1] stands for: the median of the slices' :func:`slice_grey_levels`.

    ``to_uint8`` maps generated images back through it (the VAE card's ``grey_range``), so they get
    the training images' contrast. None when no slice was 8-bit.
    """
    p = [v for v in levels if v is not None]
    if not p:
        return None
    lo, hi = (float(v) for v in np.median(p, axis=0))
    return [lo, hi] if lo < hi else None


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
    pixel_size_nm: float | None = None,
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
    pixel_size_nm : the images' pixel size, for ``cfg.adapt == "acquisition"`` (which keeps ``init``'s
        networks and fits the microscope instead: :func:`.adapt.adapt_acquisition`).
    Returns ``{"vae": card, "denoiser": card, "layout": dict, "path": str}``.
    """
    import torch

    from ..models.store import save_model
    from .layout import fit_layout
    from .store import load_generator, save_layout

    cfg = (cfg or GeneratorConfig()).validate()  # the CLI, the Train dock and scripts: one check
    if cfg.adapt == "acquisition":
        from .adapt import adapt_acquisition

        if init is None:
            raise GeneratorDataError("adapting the acquisition needs a generator to start from (--generator)")
        if fresh_denoiser:
            raise GeneratorDataError("--fresh-denoiser retrains the denoiser: use it with --adapt networks")
        _check_inputs(images, masks)
        return (yield from adapt_acquisition(images, masks, out_dir, init, slices=slices,
                                             pixel_size_nm=pixel_size_nm, seed=cfg.seed, minutes=cfg.minutes,
                                             name=cfg.name or None))
    t_job = time.perf_counter()
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
    vol, grey = {}, []
    for z in sorted(set(img_z) | set(val_z)):
        raw = np.asarray(img(z))
        vol[z] = prepare_slice(raw, cfg.scale)
        if z in img_z:
            grey.append(slice_grey_levels(raw))
    grey_range = training_grey_range(grey)
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
    train_vae_now = vae is None or cfg.vae_steps > 0
    budget = {"minutes": cfg.minutes, "vae_share": cfg.vae_share} if cfg.minutes else None
    if train_vae_now:
        vae_cfg = cfg
        if budget:
            share = cfg.vae_share * cfg.minutes
            vae_cfg = replace(cfg, vae_minutes=min(share, cfg.vae_minutes or share))
            budget["vae_minutes"] = round(vae_cfg.vae_minutes, 4)
        vae = yield from train_vae(vol, img_z, val_tiles, out_dir, vae_cfg, vae, device)
    else:
        vae_extra = {
            k: init_gen.vae_card[k]
            for k in ("latent_shift", "latent_scale", "noise_std", "noise_psd", "grey_range", "metrics", "training")
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
    # coloured pixel noise; a kept VAE keeps its parent's (a parent from before noise_psd: white noise)
    psd = vae_extra.get("noise_psd") if vae_extra else estimate_noise_psd(vae, val_tiles)
    vcard = vae_card(
        vae,
        cfg,
        {
            "latent_shift": shift,
            "latent_scale": scale,
            "noise_std": vae_extra.get("noise_std", estimate_noise_std(vae, val_tiles)),
            **({"noise_psd": psd} if psd else {}),
            # [-1, 1] is each slice's 1-99 % range, so the grey levels are this run's images' (a kept VAE's
            # parent's only when these images are not 8-bit)
            **({"grey_range": g} if (g := grey_range or vae_extra.get("grey_range")) is not None else {}),
            "metrics": metrics,
            "training": vae_extra.get("training") or _read_training(out_dir / "vae"),
            **({"parent": vae_extra["parent"]} if "parent" in vae_extra else {}),
        },
    )
    save_model(out_dir / "vae", vae, vcard)

    den = copy.deepcopy(init_gen.denoiser) if init_gen is not None and not fresh_denoiser else None
    den_cfg = cfg
    if budget:
        # the denoiser gets what is left of the job's budget (the VAE, if any, and the encoding are spent)
        left = max(0.0, cfg.minutes - (time.perf_counter() - t_job) / 60)
        den_cfg = replace(cfg, diffusion_minutes=max(1e-6, min(left, cfg.diffusion_minutes or left)))
        budget["diffusion_minutes"] = round(den_cfg.diffusion_minutes, 4)
        if train_vae_now:
            budget["vae_steps_done"] = int(_read_training(out_dir / "vae").get("steps", 0))
        else:
            budget["vae"] = "kept from the starting generator: all the time to the denoiser"
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
            **({"budget": budget} if budget else {}),
            **cfg.notes,
        }
    }
    all_masks = {**mask_of, **val_mask_of}
    yield from train_denoiser(latents, all_masks, img_z, val_z, out_dir, den_cfg, vcard, den, extra, device)
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
