"""``cellgen synth``: write N generated (image, mask) training pairs to a folder.

    cellgen synth -o DIR --n 200 [--generator GEN_DIR] [--seed S]

DIR holds images.tif, masks.tif and synth.json (see :mod:`napari_cellgen.generate.synth`);
``cellgen train --synthetic DIR`` mixes it into segmenter training.
"""

from __future__ import annotations

import argparse
import sys
import time


def add_parser(sub) -> argparse.ArgumentParser:
    from ..generate.sample import DEFAULT_GUIDANCE, DEFAULT_STEPS

    p = sub.add_parser(
        "synth",
        help="write N generated (image, mask) pairs as a synthetic training set",
        description="Draw N new mask layouts from the generator's fitted statistics, generate an EM image "
        "for "
        "each, and write DIR/images.tif, DIR/masks.tif and DIR/synth.json.",
    )
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    p.add_argument("--n", type=int, required=True, help="number of pairs")
    p.add_argument(
        "--generator", default=None, metavar="GEN_DIR",
        help="generator folder or name (default: the shipped mito-gen)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same pairs")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="denoising steps per sample")
    p.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE,
                   help="classifier-free guidance scale; 1 = none, 0 = ignore the mask")
    p.add_argument("--batch", type=int, default=4, help="samples denoised together")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args) -> int:
    from pathlib import Path

    from .._checks import number
    from .._paths import check_outputs
    from .._progress import run as drive
    from .._progress import tqdm_callback
    from ..generate.config import SampleOptions
    from ..generate.store import load_generator
    from ..generate.synth import IMAGES, MASKS, META, write_synthetic_set
    from ..models.store import looks_like_path

    opts = SampleOptions(n=args.n, steps=args.steps, guidance=args.guidance, seed=args.seed,
                         batch=args.batch).validate()
    number(args.threads, "--threads", lo=1, hi=1024, integer=True, none_ok=True)
    out = Path(args.output)
    gen_path = args.generator if args.generator and looks_like_path(args.generator) else None
    check_outputs(inputs=[("--generator", gen_path)], outputs=[("-o", out, "dir", (IMAGES, MASKS, META))])
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    gen = load_generator(args.generator)
    opts.check_memory(opts.n, (gen.tile, gen.tile), gen.vae.config["latent_channels"], gen.factor)
    t0 = time.perf_counter()
    meta = drive(
        write_synthetic_set(
            out,
            opts.n,
            gen,
            seed=opts.seed,
            steps=opts.steps,
            guidance=opts.guidance,
            batch_size=opts.batch,
        ),
        None if args.quiet else tqdm_callback("synth"),
    )
    print(
        f"cellgen synth: {meta['n']} pairs from {meta['generator']} "
        f"in {time.perf_counter() - t0:.1f} s -> {out}",
        file=sys.stderr,
    )
    return 0
