"""Fit a generator's coloured pixel noise (``noise_psd``) and write it into a copy of its VAE card.

``noise_psd`` is the power real tiles have and the VAE's reconstructions of them lack, per spatial
frequency (``generate/pixel_noise.py``). Sampling with the card's noise then adds coloured noise of
that spectrum instead of white noise of ``noise_std``. Weights and their sha256 are untouched.

The fit reads 256² tiles at random places of the given training slices (default 0-114: not the
choice block 115-139, not the held-out 140-164), normalised as training normalises them.

    python benchmarks/noise_psd_card.py src/napari_cellgen/_data/generators/mito-gen runs/mito-gen-psd
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import tifffile

from napari_cellgen.generate.config import prepare_slice
from napari_cellgen.generate.store import load_generator
from napari_cellgen.generate.train_vae import estimate_noise_psd
from napari_cellgen.models.store import atomic_write_bytes
from napari_cellgen.train.data import parse_slices

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "lucchi"
TILE = 256


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="generator folder or name")
    ap.add_argument("dest", type=Path)
    ap.add_argument("--slices", default="0-114")
    ap.add_argument("--n", type=int, default=64, help="tiles (default 64)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.dest.exists():
        raise SystemExit(f"{args.dest} exists: choose a new folder")
    gen = load_generator(args.src)
    images = tifffile.imread(args.data / "training.tif")
    zs = parse_slices(args.slices, len(images))
    rng = np.random.default_rng(args.seed)
    h, w = images.shape[1:]
    tiles = []
    for _ in range(args.n):
        z, y, x = int(rng.choice(zs)), int(rng.integers(0, h - TILE + 1)), int(rng.integers(0, w - TILE + 1))
        tiles.append(prepare_slice(images[z])[y : y + TILE, x : x + TILE])
    psd = estimate_noise_psd(gen.vae, np.stack(tiles)[:, None])  # as training fits it
    psd["fit"] = {"slices": args.slices, "tiles": args.n, "seed": args.seed, "tile": TILE,
                  "by": "benchmarks/noise_psd_card.py"}
    shutil.copytree(gen.path, args.dest)
    vpath = args.dest / "vae" / "card.json"
    card = json.loads(vpath.read_text())
    card["noise_psd"] = psd
    atomic_write_bytes(vpath, json.dumps(card, indent=2, default=str).encode())
    p = np.asarray(psd["power"])
    white = float(card.get("noise_std", 0.0)) ** 2
    print(json.dumps({"dest": str(args.dest), "mean_power_over_radii": round(float(p[1:].mean()), 5),
                      "white_noise_variance": round(white, 5),
                      "power_by_period_px": {f"{TILE / r:.1f}": round(float(p[r]), 5)
                                             for r in (2, 8, 16, 32, 64, 128)}}))


if __name__ == "__main__":
    main()
