"""``cellgen sample``: generate EM images from masks, or new (image, mask) pairs.

cellgen sample -o OUT.tif --masks MASKS.tif          # one image per 256x256 mask slice
cellgen sample -o OUT.tif --n 8 --seed 1             # OUT.tif + OUT_masks.tif (new pairs)
cellgen sample -o OUT.tif --n 8 --unconditional      # images only, no mask
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
    from ..generate.sample import DEFAULT_GUIDANCE, DEFAULT_STEPS
    from ..generate.schedule import SAMPLERS

    p = sub.add_parser(
        "sample",
        help="generate EM images from masks (or new image/mask pairs) with a trained generator",
        description="With --masks (a stack of 256x256 masks, 0 = background): one generated 256x256 uint8 "
        "image per mask slice, pixel-aligned with it. Without: N new pairs, written as OUT.tif and "
        "OUT_masks.tif (instance labels). The same seed gives the same output.",
    )
    p.add_argument("-o", "--output", required=True, metavar="OUT.tif", help="output TIFF of generated images")
    p.add_argument("--masks", default=None, metavar="MASKS.tif",
                   help="conditioning masks (N, 256, 256) or (256, 256) (default: none: new pairs)")
    p.add_argument("--n", type=int, default=4, help="number of new pairs without --masks (default 4)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"denoising steps (default {DEFAULT_STEPS})")
    p.add_argument(
        "--guidance",
        type=float,
        default=DEFAULT_GUIDANCE,
        help=f"classifier-free guidance scale; 1 = none, 0 = ignore the mask (default {DEFAULT_GUIDANCE})",
    )
    p.add_argument("--generator", default=None, metavar="GEN_DIR",
                   help="generator folder or name (default: the shipped mito-gen)")
    p.add_argument("--sampler", default="dpm++", choices=SAMPLERS,
                   help="sampler (default dpm++; dpm++sde draws fresh noise at every step)")
    p.add_argument(
        "--pixel-noise",
        default="auto",
        help="pixel noise added to the images: 'auto' (default) = the noise the generator's VAE measured on "
        "real data (coloured: the detail its reconstructions lack, where the card has it), a number = white "
        "noise of that std in [-1, 1] units, 0 = none",
    )
    p.add_argument("--unconditional", action="store_true", help="without --masks: images only, no masks")
    p.add_argument("--allow-empty", action="store_true", help="accept mask slices with no mitochondria")
    p.add_argument("--batch", type=int, default=4, help="samples denoised together (default 4)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def masks_path_for(out: Path) -> Path:
    name = out.name
    for ext in (".ome.tif", ".ome.tiff", ".tiff", ".tif"):
        if name.lower().endswith(ext):
            return out.with_name(name[: -len(ext)] + "_masks" + name[len(name) - len(ext) :])
    return out.with_name(name + "_masks.tif")


def run(args) -> int:
    import numpy as np

    from .._checks import number
    from .._paths import check_input, check_outputs, read_input
    from .._progress import run as drive
    from .._progress import tqdm_callback
    from ..generate.config import SampleOptions
    from ..generate.sample import check_masks, sample
    from ..generate.store import load_generator
    from ..io import write_tiff
    from ..models.store import looks_like_path

    # options, inputs and outputs are checked before the generator is loaded or anything generated
    try:
        noise = None if str(args.pixel_noise).lower() == "auto" else float(args.pixel_noise)
    except ValueError:
        raise ValueError(f"--pixel-noise must be a number or 'auto', got {args.pixel_noise!r}") from None
    opts = SampleOptions(n=args.n, steps=args.steps, guidance=args.guidance, seed=args.seed, batch=args.batch,
                         pixel_noise=noise).validate()
    number(args.threads, "--threads", lo=1, hi=1024, integer=True, none_ok=True)
    out = Path(args.output)
    pairs_out = args.masks is None and not args.unconditional
    src = check_input("--masks", args.masks) if args.masks else None
    gen_path = args.generator if args.generator and looks_like_path(args.generator) else None
    check_outputs(
        inputs=[("--masks", src), ("--generator", gen_path)],
        outputs=[("-o", out, "file"), ("-o (its masks)", masks_path_for(out) if pairs_out else None, "file")],
    )
    masks = None
    if src is not None:
        data, _ = read_input(src, "sample", "--masks")
        masks = np.asarray(data)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    gen = load_generator(args.generator)
    if masks is not None:
        # pad=False: the CLI takes masks whose sides are multiples of the generator's divisor
        check_masks(masks, gen.divisor, args.allow_empty)
        count, side = (1 if masks.ndim == 2 else len(masks)), masks.shape[-2:]
    else:
        count, side = opts.n, (gen.tile, gen.tile)
    opts.check_memory(count, side, gen.vae.config["latent_channels"], gen.factor)
    t0 = time.perf_counter()
    res = drive(
        sample(
            gen,
            masks,
            opts.n,
            steps=opts.steps,
            guidance=opts.guidance,
            seed=opts.seed,
            sampler=args.sampler,
            pairs=not args.unconditional,
            allow_empty=args.allow_empty,
            batch_size=opts.batch,
            pixel_noise=opts.pixel_noise,
        ),
        None if args.quiet else tqdm_callback("sample"),
    )
    dt = time.perf_counter() - t0
    write_tiff(out, res.images)
    written = [str(out)]
    if masks is None and res.masks is not None:
        mpath = masks_path_for(out)
        write_tiff(mpath, res.masks.astype(np.uint16), labels=True)
        written.append(str(mpath))
    print(
        f"cellgen sample: {len(res.images)} image(s) from {gen.name} in {dt:.1f} s "
        f"({dt / len(res.images):.2f} s each) -> {', '.join(written)}",
        file=sys.stderr,
    )
    return 0
