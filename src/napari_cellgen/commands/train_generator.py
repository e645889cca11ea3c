"""``cellgen train-generator``: train a mask-conditioned EM generator (VAE + latent denoiser).

    cellgen train-generator --images IMG.tif --masks MASKS.tif -o GEN_DIR \\
        [--vae-steps N --diffusion-steps N] [--slices LIST] [--val-slices LIST]

Only the masks of --slices are ever read (default: every non-validation slice with any
annotation); the images of all non-validation slices train the VAE and the denoiser.
``--minutes M`` sets a wall-clock budget instead of guessing step counts.

Starting from a generator (``--generator mito-gen``), ``--adapt acquisition`` (the default then) keeps
its networks and fits the user's microscope: pixel size (from the file or ``--pixel-size``), blur,
grey levels and noise from all their images, the mask layouts from the labelled slices; it takes
about a minute. ``--adapt networks`` fine-tunes the networks instead (the default as soon as
``--vae-steps``, ``--diffusion-steps`` or ``--fresh-denoiser`` is given). With
``--generator GEN_DIR --vae-steps 0`` an existing generator's VAE is kept and its denoiser fine-tuned:
the cheap way to build a generator for a few annotated slices. Add ``--fresh-denoiser`` to take
only the VAE (its training never reads masks) and train a new denoiser: needed when the init
generator's denoiser learnt from masks that the few-slice generator must not see.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..registry import looks_like_path


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def add_parser(sub) -> argparse.ArgumentParser:
    from ..cli import old_spelling
    from ..generate.config import ADAPT_MODES
    from ..generate.train import GeneratorConfig
    from ..train.loop import TRAIN_PRECISIONS

    d = GeneratorConfig()
    p = sub.add_parser(
        "train-generator",
        help="train a mask-conditioned EM image generator (VAE + latent diffusion)",
        description="Train a generator folder GEN_DIR (vae/, denoiser/, layout.json) on an image stack "
        "and its "
        "masks (0 = background). Only the masks of --slices are used; --slices '' trains an unconditional "
        "generator. Closing it early (Ctrl-C) keeps what has been written.",
    )
    p.add_argument("--images", required=True, metavar="IMG.tif", help="image stack (TIFF, zarr or folder)")
    p.add_argument("--masks", default=None, metavar="MASKS.tif",
                   help="masks, same shape as --images (default: none: an unconditional generator)")
    p.add_argument("-o", "--output", required=True, metavar="GEN_DIR", help="generator folder to write")
    p.add_argument(
        "--slices",
        default=None,
        help="the only slices whose masks are used, e.g. 0-9,40 (default: every non-validation slice "
        "with any annotation; '' = none: unconditional). They teach the mask conditioning; the images of "
        "ALL non-validation slices, labelled or not, teach the appearance (the VAE and the denoiser's "
        "unconditional part), so pass the whole stack as --images (masks 0 where unlabelled)",
    )
    p.add_argument(
        "--val-slices",
        default=None,
        help="held-out slices (default: the last 15 %%); 'none' for no validation",
    )
    p.add_argument(
        "--val-masks",
        choices=["auto", "yes", "no"],
        default="auto",
        help="use the validation slices' masks to pick checkpoints (auto: only without --slices)",
    )
    p.add_argument("--generator", default=None, metavar="GEN_DIR",
                   help="the generator to start from, a folder or name (default: none, a new generator)")
    old_spelling(p, "--init", dest="generator", metavar="GEN_DIR")
    p.add_argument(
        "--adapt",
        choices=ADAPT_MODES,
        default=None,
        help="with --generator: 'acquisition' keeps its networks and fits your microscope (pixel size, blur, "
        "grey levels, noise) on all your images and the mask layouts on the labelled slices, about a minute; "
        "'networks' fine-tunes the VAE and denoiser within --minutes (default: acquisition, or networks when "
        "--vae-steps, --diffusion-steps or --fresh-denoiser is given)",
    )
    p.add_argument("--pixel-size", type=float, default=None, metavar="NM",
                   help="the images' pixel size in nm when the file has none (for --adapt acquisition; "
                   "default: the file's)")
    p.add_argument(
        "--fresh-denoiser",
        action="store_true",
        help="with --generator: keep only its VAE and train a new denoiser (its denoiser saw other masks)",
    )
    p.add_argument("--vae-steps", type=int, default=None,
                   help=f"VAE training steps (0: keep the VAE of --generator; default {d.vae_steps})")
    p.add_argument("--diffusion-steps", type=int, default=None,
                   help=f"denoiser training steps (default {d.diffusion_steps})")
    p.add_argument("--vae-minutes", type=float, default=None,
                   help="time budget for the VAE, stops early (default: none, all --vae-steps)")
    p.add_argument("--diffusion-minutes", type=float, default=None,
                   help="time budget for the denoiser, stops early (default: none, all --diffusion-steps)")
    p.add_argument("--minutes", type=float, default=None, metavar="M",
                   help="wall-clock budget of the whole training: a VAE being trained gets "
                   f"{round(100 * d.vae_share)} %% of it, the denoiser the rest (all of it when --vae-steps 0 "
                   "keeps the "
                   "VAE of --generator); the step counts become upper bounds (default: none or 0, "
                   "run the step counts)")
    p.add_argument(
        "--tile",
        type=int,
        default=d.tile,
        metavar="PX",
        help="side of the generated tiles (and of the denoiser's training crops) in px at the generator's "
        "resolution (= the input's px when --scale is 1)",
    )
    p.add_argument("--vae-patch", type=int, default=d.vae_patch, metavar="PX",
                   help="side of the VAE's training patches, px at the generator's resolution")
    p.add_argument("--vae-batch", type=int, default=d.vae_batch, help="patches per VAE step")
    p.add_argument("--diffusion-batch", type=int, default=d.diffusion_batch,
                   help="full-size crops per denoiser step (half-size crops get 4x)")
    p.add_argument("--vae-channels", type=_ints, default=d.vae_channels,
                   help=f"VAE encoder channels per level (default: {','.join(map(str, d.vae_channels))})")
    p.add_argument(
        "--small-crop-p",
        type=float,
        default=d.small_crop_p,
        help="fraction of denoiser steps on half-side crops with 4x the batch (default %(default)s)",
    )
    p.add_argument("--unet-channels", type=_ints, default=d.block_out_channels,
                   help=f"denoiser channels per level (default: {','.join(map(str, d.block_out_channels))})")
    p.add_argument("--layers-per-block", type=int, default=d.layers_per_block,
                   help="denoiser residual layers per level")
    p.add_argument(
        "--adv-weight", type=float, default=d.adv_weight, help="patch-GAN weight for the VAE (0 = off)"
    )
    p.add_argument(
        "--latent-variants",
        type=int,
        default=d.latent_variants,
        help="dihedral variants of each slice encoded for the denoiser (1-8)",
    )
    p.add_argument("--scale", type=float, default=d.scale, help="generator resolution / input resolution")
    p.add_argument("--precision", choices=TRAIN_PRECISIONS, default=d.precision,
                   help="bf16: the forward passes in bfloat16 (weights and losses stay float32); on a CPU with "
                   "native bfloat16 (cellgen info says) VAE steps 1.4x faster, denoiser steps about the same")
    p.add_argument("--val-every", type=int, default=d.val_every, help="validate every N steps")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    p.add_argument("--name", default=None, help="the generator's name (default: GEN_DIR's)")
    p.add_argument("--quiet", action="store_true", help="only the validation lines, no progress bar")
    return p


def build_config(args):
    from .._checks import number
    from ..generate.train import GeneratorConfig

    d = GeneratorConfig()
    if args.adapt is None:
        explicit = args.vae_steps is not None or args.diffusion_steps is not None or args.fresh_denoiser
        args.adapt = "acquisition" if args.generator and not explicit else "networks"
    if args.adapt == "acquisition" and not args.generator:
        raise ValueError("--adapt acquisition needs --generator GEN_DIR (the generator to adapt, e.g. mito-gen)")
    if args.adapt == "acquisition" and args.fresh_denoiser:
        raise ValueError("--fresh-denoiser trains a new denoiser: use it with --adapt networks")
    if args.pixel_size is not None and not args.pixel_size > 0:
        raise ValueError(f"--pixel-size must be > 0 nm, got {args.pixel_size}")
    args.vae_steps = d.vae_steps if args.vae_steps is None else args.vae_steps
    args.diffusion_steps = d.diffusion_steps if args.diffusion_steps is None else args.diffusion_steps
    for name in ("vae_patch", "vae_batch", "diffusion_batch", "val_every"):
        number(getattr(args, name), f"--{name.replace('_', '-')}", lo=1, integer=True)
    if args.vae_steps < 0 or args.diffusion_steps < 1:
        raise ValueError("--vae-steps must be >= 0 and --diffusion-steps >= 1")
    if not args.vae_channels or not args.unet_channels:
        raise ValueError("--vae-channels and --unet-channels need at least one number each, e.g. 32,64,128")
    number(args.tile, "--tile", lo=1, hi=1 << 16, integer=True)
    factor = 2 ** len(args.vae_channels)
    if args.tile < factor or args.tile % (factor * 4):
        raise ValueError(f"--tile must be a multiple of {factor * 4} (the VAE factor {factor} x 4)")
    if args.fresh_denoiser and not args.generator:
        raise ValueError("--fresh-denoiser needs --generator GEN_DIR (a generator whose VAE to keep)")
    if args.vae_steps == 0 and not args.generator:
        raise ValueError("--vae-steps 0 needs --generator GEN_DIR (a generator whose VAE to keep)")
    return GeneratorConfig(
        vae_steps=args.vae_steps,
        diffusion_steps=args.diffusion_steps,
        vae_minutes=args.vae_minutes,
        diffusion_minutes=args.diffusion_minutes,
        minutes=args.minutes,
        vae_patch=args.vae_patch,
        vae_batch=args.vae_batch,
        diffusion_batch=args.diffusion_batch,
        vae_channels=tuple(args.vae_channels),
        block_out_channels=tuple(args.unet_channels),
        layers_per_block=args.layers_per_block,
        adv_weight=args.adv_weight,
        latent_variants=args.latent_variants,
        scale=args.scale,
        precision=args.precision,
        adapt=args.adapt,
        tile=args.tile,
        latent_crop=args.tile // factor,
        small_crop_p=args.small_crop_p,
        val_every=args.val_every,
        seed=args.seed,
        threads=args.threads,
        name=args.name or Path(args.output).name,
        notes={"images": str(args.images), "masks": str(args.masks) if args.masks else None},
    ).validate()


def _read(path, opt):
    from .._paths import read_input

    return read_input(path, "train-generator", opt)[0]


def run(args) -> int:
    from .._paths import check_input, check_outputs, read_input
    from .._progress import run as drive
    from .._progress import tqdm_callback
    from ..generate.store import LAYOUT, PARTS
    from ..generate.train import train_generator
    from ..io.stack import stored_pixel_size
    from ..models.store import looks_like_path
    from ..train.data import parse_slices

    cfg = build_config(args)  # options, inputs and outputs: all checked before any work
    inputs = [("--images", check_input("--images", args.images))]
    if args.masks:
        inputs.append(("--masks", check_input("--masks", args.masks)))
    if args.generator and looks_like_path(args.generator):
        inputs.append(("--generator", args.generator))
    check_outputs(inputs, [("-o", args.output, "dir", (*PARTS, LAYOUT))])
    if args.generator:
        from ..generate.store import load_generator

        load_generator(args.generator)  # its cards and weights, before any training
    images, meta = read_input(args.images, "train-generator", "--images")
    masks = _read(args.masks, "--masks") if args.masks else None
    n = 1 if images.ndim == 2 else images.shape[0]
    slices = None
    if args.slices is not None:
        slices = parse_slices(args.slices, n) if args.slices.strip() else []
    val = None
    if args.val_slices is not None:
        val = [] if args.val_slices.strip().lower() in ("", "none") else parse_slices(args.val_slices, n)
    val_masks = {"auto": None, "yes": True, "no": False}[args.val_masks]
    pixel_nm = args.pixel_size
    if pixel_nm is None and stored_pixel_size(meta):
        pixel_nm = float(stored_pixel_size(meta)[-1])
    bar = None if args.quiet else tqdm_callback("train-generator")
    t0 = time.perf_counter()

    def report(p):
        if bar is not None:
            bar(p)
        if p.info and any(k.startswith("val_") for k in p.info):
            vals = {k: round(v, 4) for k, v in p.info.items() if k.startswith("val_")}
            line = f"{p.stage} step {p.done}/{p.total} {json.dumps(vals)} {time.perf_counter() - t0:.0f} s"
            print(line, file=sys.stderr, flush=True)

    res = drive(
        train_generator(
            images,
            masks,
            args.output,
            cfg,
            slices=slices,
            val_slices=val,
            val_masks=val_masks,
            init=args.generator,
            fresh_denoiser=args.fresh_denoiser,
            pixel_size_nm=pixel_nm,
        ),
        report,
    )
    if "acquisition" in res:
        a = res["acquisition"]
        print(f"cellgen train-generator: adapted {args.generator} to this microscope in {a['seconds']:.0f} s and "
              f"wrote {res['path']}: pixel scale {a['scale']:.3g} ({a['scale_source']}), blur {a['blur_sigma']} px, "
              f"noise {a['noise_sigma']:.1f} grey levels, spectrum distance {a['spectrum_distance_before']:.3f} -> "
              f"{a['spectrum_distance']:.3f}; layouts from {len(res['layout'].get('slices', []))} labelled slices. "
              f"Use it: cellgen synth --generator {_as_path_arg(res['path'])} -o DIR", file=sys.stderr)
        return 0
    print(
        f"cellgen train-generator: wrote {res['path']} in {time.perf_counter() - t0:.0f} s "
        f"(mask slices: {len(res['denoiser']['training']['mask_slices'])}; "
        f"VAE {json.dumps(res['vae'].get('metrics', {}))}; "
        f"denoiser {json.dumps(res['denoiser'].get('metrics', {}))}). "
        f"Use it: cellgen synth --generator {_as_path_arg(res['path'])} -o DIR",
        file=sys.stderr,
    )
    return 0


def _as_path_arg(path) -> str:
    """``path`` as --generator reads it as a folder, not a registered name (``./my-gen``)."""
    text = str(path)
    return text if looks_like_path(text) else f"./{text}"
