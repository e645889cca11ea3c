"""How real do a generator's images look? A classifier two-sample test with its controls, plus statistics.

    python benchmarks/realism.py [--generator mito-gen] [--n 96] [--n-control 256] [--minutes 9]

Tiles (256x256, uint8; real tiles as in the file with ``--real raw``, the default since 2026-12-04 and
what an independent check compares; ``--real normalized`` stretches each slice's 1-99 % range to
0-255, the generator's internal scale, as the measure did before):
- R1: real tiles at random places of the slices the generator never trained on (read from its
  card: the validation slices, minus any image or mask slice it learnt from);
- G: the images the generator makes from the masks of the first ``--n`` tiles of R1
  (``generate.sample`` with its defaults: 25 DPM-Solver++ steps, guidance 2, the VAE's pixel
  noise). A real tile and its generated twin share a mask: the classifier can only go by appearance;
- R2: other real tiles of the same slices; R3: real tiles of the block of as many slices just
  before them; B: R2 blurred by a Gaussian of sigma 1 px.

Each set is cut into 128x128 crops (4 per tile) and a small CNN (``napari_cellgen.realism.c2st``)
is trained to tell two sets apart, scored by 5-fold cross-validation with the crops of a tile
(and a real tile with its generated twin) kept in one fold, repeated with other fold splits; the
95 % intervals resample whole tiles. Controls, which must pass for the measure to mean anything,
with ``--n-control`` tiles per set: R1 vs R2 (0.5 +- 0.03) and R1 vs B (~1.0); at the measure's
size ``--n``: R1 vs R2 (its interval covers 0.5) and R1 vs B. R1 vs R3 is a reference, not a
pass/fail control: how well real tissue a few slices away is told apart (drift). The measure:
R1[:n] vs G; it and R1 vs R3 are repeated with every crop standardised (mean 0, std 1: texture
only, no grey levels). Also grey-level statistics and radially averaged power spectra per band.

Sampling is slow on a CPU (10-30 s per tile on a busy 2-core machine), so generated tiles and
each classifier result are cached (``--cache``) and a run stops after ``--minutes``: run the same
command again to go on. Writes benchmarks/results/realism.json with the generator's weights'
sha256, the command and the date.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import tifffile

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _provenance import generator_ref, stamp, write_json  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data" / "lucchi"
TILE, CROP = 256, 128


def held_out_slices(gen, nz: int) -> list[int]:
    """Slices the generator never learnt from: its validation slices minus image/mask slices."""
    tr = gen.denoiser_card.get("training", {})
    val = tr.get("val_slices")
    if not val:
        raise SystemExit(f"{gen.name}: its card names no validation slices; pass --slices")
    seen = set(tr.get("image_slices", [])) | set(tr.get("mask_slices", [])) | set(gen.layout.get("slices", []))
    free = sorted(z for z in val if z not in seen and 0 <= z < nz)
    if not free:
        raise SystemExit(f"{gen.name}: every validation slice was also trained on; pass --slices")
    return free


def positions(zs, n, shape, seed):
    rng = np.random.default_rng(seed)
    h, w = shape
    return [(int(rng.choice(zs)), int(rng.integers(0, h - TILE + 1)), int(rng.integers(0, w - TILE + 1)))
            for _ in range(n)]


def real_tiles(images, pos, mode: str = "raw"):
    """Real tiles as the user has them ("raw"), or each slice's 1-99 % range stretched to 0-255
    ("normalized": the generator's internal scale, what this measure used before 2026-12-04)."""
    from napari_cellgen.generate.config import prepare_slice

    if mode == "raw":
        return np.stack([np.asarray(images[z, y : y + TILE, x : x + TILE], np.uint8) for z, y, x in pos])
    norm = {}
    out = []
    for z, y, x in pos:
        if z not in norm:
            norm[z] = prepare_slice(images[z])
        out.append(np.round((norm[z][y : y + TILE, x : x + TILE] + 1) * 127.5).astype(np.uint8))
    return np.stack(out)


class OutOfTime(Exception):
    """This run's --minutes are spent; what is done is cached."""


class Budget:
    def __init__(self, minutes: float):
        self.t0, self.seconds = time.perf_counter(), 60 * minutes
        self.c2st_s = 0.0  # the longest classifier run so far: one is started only if it can finish

    def check(self, what: str, need_s: float = 0.0):
        """Raise :class:`OutOfTime` unless ``need_s`` seconds are left."""
        if time.perf_counter() - self.t0 + need_s > self.seconds:
            raise OutOfTime(what)


def generated_tiles(gen, masks, pos, key: dict, path: Path, budget: Budget, batch: int):
    """Sample the images of ``masks`` batch by batch, caching each batch in ``path``.

    Each batch has its own seed, so the result depends neither on where a run stopped nor on how
    many tiles are asked for (a cache made for more or fewer places at the same settings is reused).
    Returns (images, sampling seconds so far); raises :class:`OutOfTime`.
    """
    from napari_cellgen.generate.sample import sample_sync

    done, seconds = np.zeros((0, TILE, TILE), np.uint8), 0.0
    if path.is_file():
        c = np.load(path, allow_pickle=False)
        old = json.loads(str(c["key"]))
        old_pos = [tuple(p) for p in (old.pop("positions", None) or json.loads(str(c["positions"])))]
        k = min(len(old_pos), len(pos), len(c["images"])) // batch * batch
        if old == key and old_pos[:k] == [tuple(p) for p in pos[:k]]:
            done, seconds = c["images"][:k], float(c["seconds"]) * k / max(1, len(c["images"]))
        else:
            print(f"{path}: made with other settings or weights; starting again", file=sys.stderr)
    while len(done) < len(masks):
        budget.check(f"{len(done)}/{len(masks)} generated tiles")
        i, t1 = len(done), time.perf_counter()
        out = sample_sync(gen, masks[i : i + batch], steps=key["steps"], guidance=key["guidance"],
                          seed=key["seed"] + i, allow_empty=True, batch_size=batch,
                          noise_tails=key.get("noise_tails", False), sampler=key.get("sampler", "dpm++"))
        done, seconds = np.concatenate([done, out.images]), seconds + time.perf_counter() - t1
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez_compressed(tmp, images=done, key=json.dumps(key), positions=json.dumps(pos[: len(done)]),
                            seconds=seconds)
        tmp.replace(path)
        print(f"generated {len(done)}/{len(masks)} ({seconds / len(done):.1f} s per tile)", file=sys.stderr,
              flush=True)
    return done[: len(masks)], seconds


def cached_c2st(name, key, folder: Path, budget: Budget, *args, **kw):
    """:func:`napari_cellgen.realism.c2st`, its result cached in ``folder/name.json`` under ``key``."""
    from napari_cellgen.realism import c2st

    path = folder / f"c2st_{name}.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("key") == key:
            budget.c2st_s = max(budget.c2st_s, old["result"].get("time_s", 0.0))
            return old["result"]
    budget.check(f"classifier {name}", need_s=budget.c2st_s)
    t0 = time.perf_counter()
    res = c2st(*args, **kw)
    res["time_s"] = round(time.perf_counter() - t0, 1)
    budget.c2st_s = max(budget.c2st_s, res["time_s"])
    write_json(path, {"key": key, "result": res})
    print(f"{name}: {res['accuracy']:.3f} [{res['ci95'][0]:.3f}, {res['ci95'][1]:.3f}] ({res['time_s']} s)",
          file=sys.stderr, flush=True)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default=None, help="generator folder or name (default: the shipped one)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--slices", default=None, help="held-out slices, e.g. 140-164 (default: from the card)")
    ap.add_argument("--n", type=int, default=96, help="generated tiles (and their real twins; default 96)")
    ap.add_argument("--n-control", type=int, default=256, help="real tiles per set in the controls (default 256)")
    ap.add_argument("--steps", type=int, default=25, help="denoising steps (default 25)")
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2, help="cross-validations with other fold splits")
    ap.add_argument("--train-steps", type=int, default=150, help="classifier training steps per fold")
    ap.add_argument("--width", type=int, default=8, help="classifier width (channels of its first layer)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4, help="tiles sampled together")
    ap.add_argument("--sampler", default="dpm++", help="generate.sample's sampler (default dpm++)")
    ap.add_argument("--noise-tails", action="store_true",
                    help="pixel noise not clipped back into the training range (generate.sample noise_tails)")
    ap.add_argument("--minutes", type=float, default=9.0, help="stop after this (all done is cached); rerun to go on")
    ap.add_argument("--cache", type=Path, default=Path("runs") / "realism", help="folder of cached work")
    ap.add_argument("--real", choices=("raw", "normalized"), default="raw",
                    help="real tiles as in the file (raw, what a user and the independent check compare) or each "
                         "slice stretched 1-99 %% to 0-255 (normalized, the measure before 2026-12-04)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "realism.json")
    args = ap.parse_args(argv)
    if args.n_control < args.n:
        ap.error("--n-control must be at least --n")
    budget = Budget(args.minutes)
    try:
        return _main(args, argv, budget)
    except OutOfTime as e:
        print(f"out of time at {e}; the work done is cached in {args.cache}: run the same command again",
              file=sys.stderr)
        return 3


def _main(args, argv, budget):
    import torch
    from scipy import ndimage as ndi

    from napari_cellgen.generate.schedule import noise_offset
    from napari_cellgen.generate.store import load_generator
    from napari_cellgen.realism import crop_tiles, grey_distance, grey_stats, power_spectrum, spectrum_bands
    from napari_cellgen.train.data import parse_slices

    torch.set_num_threads(args.threads)
    gen = load_generator(args.generator)
    ref = generator_ref(args.generator)
    images = tifffile.imread(args.data / "training.tif")
    masks = tifffile.imread(args.data / "training_groundtruth.tif")
    nz = images.shape[0]
    held = parse_slices(args.slices, nz) if args.slices else held_out_slices(gen, nz)
    lo = min(held)
    block = list(range(max(0, lo - len(held)), lo))  # the neighbouring block, as many slices
    shape = images.shape[1:]
    n, nc = args.n, args.n_control
    # the first n places of R1 (same seed) are the generated tiles' places
    p1 = positions(held, nc, shape, args.seed)
    p2 = positions(held, nc, shape, args.seed + 1)
    p3 = positions(block, nc, shape, args.seed + 2)
    m1 = np.stack([masks[z, y : y + TILE, x : x + TILE] != 0 for z, y, x in p1[:n]])

    wkey = [ref["vae_weights_sha256"], ref["denoiser_weights_sha256"]]
    key = {"weights": wkey, "steps": args.steps, "guidance": args.guidance, "seed": args.seed, "batch": args.batch}
    # what else changes the images (only when set, so caches made before these existed stay valid)
    if noise_offset(gen.denoiser_card):
        key["noise_offset"] = noise_offset(gen.denoiser_card)
    if args.noise_tails:
        key["noise_tails"] = True
    if args.sampler != "dpm++":
        key["sampler"] = args.sampler
    if gen.vae_card.get("noise_psd"):
        key["noise_psd"] = hashlib.sha256(json.dumps(gen.vae_card["noise_psd"]["power"]).encode()).hexdigest()[:16]
    g, sample_s = generated_tiles(gen, m1, p1[:n], key, args.cache / "generated.npz", budget, args.batch)

    r1, r2, r3 = (real_tiles(images, p, args.real) for p in (p1, p2, p3))
    blur = np.stack([np.round(ndi.gaussian_filter(t.astype(np.float64), 1.0, mode="reflect")) for t in r2])
    blur = blur.clip(0, 255).astype(np.uint8)
    c1, gr1 = crop_tiles(r1, CROP)
    cg, grg = crop_tiles(g, CROP)
    c2, gr2 = crop_tiles(r2, CROP)
    c3, gr3 = crop_tiles(r3, CROP)
    cb, _ = crop_tiles(blur, CROP)
    k = (TILE // CROP) ** 2  # crops per tile
    small = slice(0, n * k)  # the crops of the first n tiles of a set
    off = nc  # group ids of the second set start after R1's; a generated tile shares its real twin's
    kw = {"folds": args.folds, "repeats": args.repeats, "steps": args.train_steps, "width": args.width,
          "seed": args.seed}
    runs = {
        # controls with many real tiles: is the machinery unbiased (0.5) and able to see (blur: 1.0)?
        "control_real_vs_real_same_slices": (c1, gr1, c2, gr2 + off),
        "control_real_vs_real_neighbour_block": (c1, gr1, c3, gr3 + off),
        "control_real_vs_blurred_real_sigma1": (c1, gr1, cb, gr2 + off),
        # the same at the size of the measure: the spread of chance, and its power
        "control_at_n_real_vs_real_same_slices": (c1[small], gr1[small], c2[small], gr2[small] + off),
        "control_at_n_real_vs_blurred_real_sigma1": (c1[small], gr1[small], cb[small], gr2[small] + off),
        # the measure: a real tile and the image generated from its mask share a group (fold)
        "real_vs_generated": (c1[small], gr1[small], cg, grg),
    }
    # the same with every crop standardised (mean 0, std 1): texture and structure only, no grey levels
    std_runs = {
        "real_vs_generated_standardized": runs["real_vs_generated"],
        "control_real_vs_real_neighbour_block_standardized": runs["control_real_vs_real_neighbour_block"],
    }
    res = {
        "generator": ref,
        **stamp(argv),
        "data": str(args.data),
        "held_out_slices": held,
        "block_control_slices": block,
        "n_generated_tiles": n,
        "n_control_tiles_per_set": nc,
        "real_tiles": args.real,
        "tile": TILE,
        "crop": CROP,
        "sampling": {"steps": args.steps, "guidance": args.guidance, "sampler": args.sampler,
                     "pixel_noise": "the VAE card's noise_std", "noise_tails": args.noise_tails,
                     "noise_offset": noise_offset(gen.denoiser_card),
                     "noise_psd": "the VAE card's (coloured)" if gen.vae_card.get("noise_psd") else None,
                     "seed": args.seed, "batch": args.batch,
                     "masks": "of R1's first n tiles (random places of the held-out slices, empty ones included)",
                     "s_per_tile": round(sample_s / n, 2)},
        "threads": args.threads,
        "cache": f"{args.cache}: work of earlier runs (tiles, classifier results) is reused, not redone",
        "classifier": {**kw, "model": f"napari_cellgen.realism.small_cnn(width={args.width}): space-to-depth 2, "
                                      "4 conv+BN+ReLU, global average pool, linear",
                       "crops": f"{CROP}x{CROP}, {k} per tile, a tile's crops in one fold",
                       "ci95": "bootstrap over tiles (groups); ci95_wilson_crops treats crops as independent"},
    }
    for name, (a, ga, b, gb) in {**runs, **std_runs}.items():
        gen_run = "generated" in name  # the controls compare real tiles only: any generator or sampling reuses them
        ckey = {"weights": wkey if gen_run else None, "n": n, "n_control": nc, **kw,
                "sampling": key if gen_run else None, "held": held, "data": str(args.data)}
        if args.real != "normalized":  # the key of results cached before --real existed stays valid
            ckey["real"] = args.real
        if name in std_runs:
            ckey["standardize"] = True
        res[name] = cached_c2st(name, ckey, args.cache, budget, a, b, ga, gb, **kw, standardize=name in std_runs)

    res["grey_levels"] = {
        "real": grey_stats(r1[:n]),
        "generated": grey_stats(g),
        "real_other": grey_stats(r2[:n]),
        "distance_real_vs_generated": grey_distance(r1[:n], g),
        "distance_real_vs_real_other": grey_distance(r1[:n], r2[:n]),
        "distance_real_vs_real_neighbour_block": grey_distance(r1[:n], r3[:n]),
    }
    s1, sg, s2, sb = (power_spectrum(c) for c in (c1[small], cg, c2[small], cb[small]))
    res["power_spectrum"] = {
        "what": "log10(power / power of the real tiles) per octave band of the radially averaged spectrum "
                "(128x128 crops, Hann window); < 0: less detail at that scale than real",
        "generated": spectrum_bands(s1, sg, CROP),
        "real_other": spectrum_bands(s1, s2, CROP),
        "blurred_real_sigma1": spectrum_bands(s1, sb, CROP),
    }
    null, null_n = res["control_real_vs_real_same_slices"], res["control_at_n_real_vs_real_same_slices"]
    res["controls_pass"] = {
        # two samples of one distribution: the machinery must sit at chance
        "real_vs_real_same_slices_within_0.5_pm_0.03": abs(null["accuracy"] - 0.5) <= 0.03,
        "real_vs_real_same_slices_at_n_ci95_covers_0.5": null_n["ci95"][0] <= 0.5 <= null_n["ci95"][1],
        # and see a difference a person would call slight
        "blur_detected_at_least_0.95": res["control_real_vs_blurred_real_sigma1"]["accuracy"] >= 0.95,
        "blur_detected_at_n_at_least_0.95": res["control_at_n_real_vs_blurred_real_sigma1"]["accuracy"] >= 0.95,
    }
    res["notes"] = (
        "control_real_vs_real_neighbour_block is not a pass/fail control: it measures how far real tissue "
        "a few slices away differs (a drift floor). A generator trained on other slices is judged on "
        "held-out ones, so part of real_vs_generated can be that drift."
    )
    write_json(args.out, res)
    print(json.dumps({k: v for k, v in res.items() if k != "power_spectrum"}, indent=1)[:6000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
