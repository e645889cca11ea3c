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
        "--generator", default=None, metavar="GEN_DIR", help="generator folder or name (default: shipped)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quiet", action="store_true")
    return p


def run(args) -> int:
    from pathlib import Path

    from .._progress import run as drive
    from .._progress import tqdm_callback
    from ..generate.synth import write_synthetic_set

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder")
    t0 = time.perf_counter()
    meta = drive(
        write_synthetic_set(
            out,
            args.n,
            args.generator,
            seed=args.seed,
            steps=args.steps,
            guidance=args.guidance,
            batch_size=args.batch,
        ),
        None if args.quiet else tqdm_callback("synth"),
    )
    print(
        f"cellgen synth: {meta['n']} pairs from {meta['generator']} "
        f"in {time.perf_counter() - t0:.1f} s -> {out}",
        file=sys.stderr,
    )
    return 0
