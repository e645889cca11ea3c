"""How real do generated images look on a NEW volume? (issue 16: "realistic scans of *their* EM")

The new volume is few_label_gain.py's: Lucchi slices 140-164, 2-slice-thick sections, degraded
"strong" (10 nm pixels, blur, gamma, noise). The generated sets are the pairs few_label_gain.py
wrote for k = 1 (new layouts from the labelled section's statistics):

* ``acquisition``: mito-gen kept, its microscope fitted on the pool images (``--adapt acquisition``);
* ``networks``: mito-gen's VAE and denoiser fine-tuned 8 min on the pool (the recorded run).

The reference set is ``--n`` crops of 128x128 of the pool sections (the images the adaptation saw,
as a user's unlabelled volume), grouped by section. Classifier two-sample tests
(``napari_cellgen.realism.c2st``, 5 folds x ``--repeats``, 95 % cluster-bootstrap interval) of the
reference against: other crops of the same sections (control, must be ~0.5), the same blurred by
sigma 1 px (positive control, ~1.0), crops of the evaluation sections (reference: how much the
tissue drifts within the block) and each generated set (one crop per tile, random place); each
also with every crop standardised (texture only).

    python benchmarks/realism_new_volume.py        # ~10 min on 2 idle cores; needs the two synth sets

Writes benchmarks/results/realism_new_volume.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import tifffile

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _provenance import stamp, write_json  # noqa: E402
from few_label_gain import BLOCK, DATA, split, thicken  # noqa: E402
from finetune_gain import PRESETS, degrade  # noqa: E402

C = 128


def real_crops(vol, zs, n, rng):
    out, groups = [], []
    for i in range(n):
        z = zs[i % len(zs)]
        y, x = (int(rng.integers(0, s - C + 1)) for s in vol.shape[1:])
        out.append(vol[z, y : y + C, x : x + C])
        groups.append(z)
    return np.stack(out), np.asarray(groups)


def gen_crops(images, n, rng):
    idx = rng.permutation(len(images))[:n]
    out = []
    for i in idx:
        y, x = (int(rng.integers(0, s - C + 1)) for s in images.shape[1:])
        out.append(images[i, y : y + C, x : x + C])
    return np.stack(out), 1000 + np.arange(len(idx))


def main(argv=None):
    from scipy.ndimage import gaussian_filter

    from napari_cellgen.realism import c2st, grey_stats

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--acquisition", type=Path, default=Path("runs/few_label_acq/synth_k1"))
    ap.add_argument("--networks", type=Path, default=Path("runs/few_label_gain/synth_k1"))
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "realism_new_volume.json")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    lo, hi = BLOCK
    img = tifffile.imread(DATA / "training.tif")[lo:hi]
    gt = tifffile.imread(DATA / "training_groundtruth.tif")[lo:hi]
    vol, _ = degrade(*thicken(img, gt, 2), PRESETS["strong"], 0)
    sp = split(vol.shape[0], 2, 12, 10)
    rng = np.random.default_rng(args.seed)
    ref, g_ref = real_crops(vol, sp["pool"], args.n, rng)
    other, g_other = real_crops(vol, sp["pool"], args.n, rng)
    ev, g_ev = real_crops(vol, sp["eval"], args.n, rng)
    blurred = np.clip(np.round(np.stack([gaussian_filter(c.astype(np.float64), 1.0) for c in other])), 0, 255)
    sets = {"control: other crops of the same sections": (other, g_other),
            "control: those blurred by sigma 1 px": (blurred.astype(np.uint8), g_other),
            "reference: evaluation sections (tissue drift)": (ev, g_ev)}
    for name, folder in (("acquisition", args.acquisition), ("networks", args.networks)):
        if (folder / "images.tif").exists():
            sets[f"generated: {name}"] = gen_crops(tifffile.imread(folder / "images.tif"), args.n, rng)
    res = {"what": "classifier two-sample tests, evaluation-section crops of the new volume vs each set",
           "volume": f"Lucchi {lo}-{hi - 1}, 2-thick, degradation strong", "crop": C, "n": args.n,
           "real_stats": grey_stats(ref), "tests": {}}
    for name, (b, gb) in sets.items():
        for std in (False, True):
            r = c2st(ref, b, g_ref, gb, repeats=args.repeats, seed=args.seed, standardize=std)
            key = name + (" (standardised)" if std else "")
            res["tests"][key] = {k: r[k] for k in ("accuracy", "ci95") if k in r} | {"stats": grey_stats(b)}
            print(f"{key}: {r['accuracy']:.3f} {r.get('ci95')}", flush=True)
    res.update(stamp(argv))
    write_json(args.out, res)


if __name__ == "__main__":
    main()
