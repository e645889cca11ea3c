"""``cellgen export``: a model as a bioimage.io model package (``NAME.zip``, spec 0.5).

cellgen export mito-unet -o mito-unet.zip      # the shipped model
cellgen export MODEL_DIR -o my-model.zip       # a trained model folder (or registered name)

The package runs in any bioimage.io consumer, and back in napari-cellgen with
``cellgen segment --model NAME.zip``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "export",
        help="write a model as a bioimage.io model package (NAME.zip)",
        description="Write a model as a bioimage.io model package (spec 0.5): PyTorch state dict + "
        "architecture source, a TorchScript copy, test tensors, pre-processing, cover image, README and "
        "the model's card. napari-cellgen runs it back with `cellgen segment --model NAME.zip`.",
    )
    p.add_argument("model", nargs="?", default=None,
                   help="registered model name or model folder (default: the shipped model)")
    p.add_argument("-o", "--output", required=True, metavar="NAME.zip", help="package to write")
    p.add_argument("--name", default=None, help="the package's display name (default: from the model's card)")
    p.add_argument("--test-size", type=int, default=256, metavar="PX",
                   help="side of the test tensors at model resolution (default 256)")
    p.add_argument("--force", action="store_true", help="replace an existing NAME.zip")
    return p


def run(args) -> int:
    from ..cli import UserError
    from ..models.bioimageio import export_package

    out = Path(args.output)
    if out.exists() and not args.force:
        raise UserError(f"{out} exists; give --force to replace it")
    if out.is_dir():
        raise IsADirectoryError(f"{out} is a folder; give a file name such as {out / 'model.zip'}")
    if args.test_size < 16:
        raise ValueError("--test-size must be at least 16 pixels")
    t0 = time.perf_counter()
    path = export_package(args.model, out, size=args.test_size, name=args.name)
    size_mb = path.stat().st_size / 1e6
    print(f"bioimage.io package -> {path} ({size_mb:.1f} MB, {time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    return 0
