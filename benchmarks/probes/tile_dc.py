"""How much do tiles vary in overall level? Real tiles vs generated ones, in grey levels and in latent means.

The diagnosis behind ``denoiser_dc_choice.py``: generated tiles' mean grey level varies far less than
real tiles' ("lazy DC"). This measures it on the tiles ``benchmarks/realism.py`` generated and cached
(``CACHE/generated.npz``, with their places), against the real tiles at those places:

- the std over tiles of the mean grey level (raw file levels for real tiles), and of the mean of the
  real tiles (normalised) and of their VAE reconstructions;
- the std over tiles of each latent channel's spatial mean (the generator's VAE encodes both, slice
  by slice normalised as in training; normalised latent units);
- the tissue's drift along z: per block of slices, the mean of the normalised slices (0 = the middle
  of each slice's 1-99 % range) and the fraction of pixels in the brightest quarter of that range.

    python benchmarks/probes/tile_dc.py --generator mito-gen --cache runs/choice_dc/shipped \\
        --cache runs/choice_dc/dc --out benchmarks/results/tile_dc.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import tifffile

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _provenance import generator_ref, stamp, write_json  # noqa: E402

DATA = HERE.parents[1] / ".." / "shared" / "data" / "lucchi"
TILE = 256


def latent_means(gen, tiles) -> np.ndarray:
    """(N, C) spatial means of the normalised posterior-mean latents of [-1, 1] tiles (N, S, S)."""
    import torch

    vc = gen.vae_card
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(tiles, np.float32))[:, None]
        z = torch.cat([gen.vae.encode(x[i : i + 8]).mean for i in range(0, len(x), 8)])
        z = (z - float(vc.get("latent_shift", 0.0))) * float(vc["latent_scale"])
    return z.mean((2, 3)).numpy()


def reconstructed_means(gen, tiles) -> np.ndarray:
    """(N,) mean of the VAE's reconstructions of [-1, 1] tiles (does the VAE keep a tile's level?)."""
    import torch

    from napari_cellgen.generate.train_vae import _reconstruct

    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(tiles, np.float32))[:, None]
        rec = _reconstruct(gen.vae, x).clamp(-1, 1)
    return rec.mean((1, 2, 3)).numpy()


def to_unit(tiles_uint8, grey_range) -> np.ndarray:
    """Generated uint8 tiles back to the [-1, 1] units the VAE was trained on."""
    lo, hi = grey_range
    return np.clip((tiles_uint8.astype(np.float32) - lo) / (hi - lo) * 2 - 1, -1, 1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default="mito-gen", help="whose VAE encodes the tiles")
    ap.add_argument("--cache", type=Path, action="append", required=True, help="a realism.py cache folder")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--block", type=int, default=15, help="slices per block of the drift table")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE.parent / "results" / "tile_dc.json")
    args = ap.parse_args(argv)
    import torch

    from napari_cellgen.generate.config import prepare_slice
    from napari_cellgen.generate.store import load_generator

    torch.set_num_threads(args.threads)
    gen = load_generator(args.generator)
    images = tifffile.imread(args.data / "training.tif")
    norm = {}

    def normed(z):
        if z not in norm:
            norm[z] = prepare_slice(images[z])
        return norm[z]

    res = {"generator": generator_ref(args.generator), "sets": {}}
    for cache in args.cache:
        c = np.load(cache / "generated.npz", allow_pickle=False)
        key = json.loads(str(c["key"]))
        pos = [tuple(p) for p in (key.get("positions") or json.loads(str(c["positions"])))]
        gen_tiles = c["images"][: len(pos)]
        real_raw = np.stack([images[z, y : y + TILE, x : x + TILE] for z, y, x in pos])
        real_unit = np.stack([normed(z)[y : y + TILE, x : x + TILE] for z, y, x in pos])
        grey = gen.vae_card.get("grey_range") or (0, 255)
        lat_real, lat_gen = latent_means(gen, real_unit), latent_means(gen, to_unit(gen_tiles, grey))
        rec_mean = reconstructed_means(gen, real_unit)
        res["sets"][cache.name] = {
            "tiles": len(pos),
            "slices": [min(p[0] for p in pos), max(p[0] for p in pos)],
            "grey_mean": {"real": [float(real_raw.mean((1, 2)).mean()), float(real_raw.mean((1, 2)).std())],
                          "generated": [float(gen_tiles.mean((1, 2)).mean()), float(gen_tiles.mean((1, 2)).std())]},
            "normalised_mean": {"real": [float(real_unit.mean((1, 2)).mean()), float(real_unit.mean((1, 2)).std())],
                                "vae_reconstruction": [float(rec_mean.mean()), float(rec_mean.std())]},
            "latent_mean_per_channel": {
                "real": {"mean": lat_real.mean(0).round(3).tolist(), "std": lat_real.std(0).round(3).tolist()},
                "generated": {"mean": lat_gen.mean(0).round(3).tolist(), "std": lat_gen.std(0).round(3).tolist()},
            },
        }
        print(cache.name, json.dumps(res["sets"][cache.name]), flush=True)
    drift = []
    for z0 in range(0, len(images), args.block):
        zs = range(z0, min(len(images), z0 + args.block))
        v = np.stack([normed(z) for z in zs])
        drift.append({"slices": [zs[0], zs[-1]], "normalised_mean": round(float(v.mean()), 4),
                      "bright_fraction": round(float((v > 0.5).mean()), 4),
                      "raw_mean": round(float(images[zs[0] : zs[-1] + 1].mean()), 2)})
    res["drift_along_z"] = {"what": "per block of slices: mean of the slices normalised to [-1, 1] by their "
                            "1-99 % range; fraction of pixels above 0.5 there; raw mean grey level",
                            "blocks": drift}
    print(json.dumps(drift), flush=True)
    res.update(stamp(argv))
    write_json(args.out, res)


if __name__ == "__main__":
    main()
