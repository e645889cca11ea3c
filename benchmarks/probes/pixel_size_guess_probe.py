"""Probe (issue 15): can the pipeline guess an unknown xy pixel size from the model's own confidence?

``mito-unet-travel`` v2 on thick sections finds 0.78 IoU with the pixel size and 0.34 without (strong
surrogate, 10 nm): a file without a pixel size is common. Guess: run the model on a few slices at each
candidate pixel size of a fixed grid and keep the one where its probabilities are most decided (mean
|2p - 1|). Written before the run: the guess is worth building (for stacks without a pixel size) only if
it lands within one grid step of the truth on every surrogate below, including clean 5 nm Lucchi, and
the IoU with the guessed pixel size is within 0.02 of the IoU with the true one on each.

Surrogates: Lucchi thick sections (40 nm, from slice 6: not a start any decision used) and block
140-164, each clean and degraded at 7 and 15 nm per pixel (pixel sizes no decision used; blur, gamma
and noise new as well).

    python benchmarks/probes/pixel_size_guess_probe.py   # -> results/pixel_size_guess_probe.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _provenance import machine, model_ref, stamp, write_json  # noqa: E402
from finetune_gain import degrade  # noqa: E402
from train_default import DATA, load_lucchi  # noqa: E402

GRID = (5.0, 6.25, 7.5, 10.0, 12.5, 15.0, 20.0)
PROBE_SLICES = 4
CASES = {
    "7 nm": {"resample": 5 / 7, "blur_sigma_px": 0.8, "gamma": 0.6, "noise_sigma_grey": 18.0, "invert": False},
    "15 nm": {"resample": 1 / 3, "blur_sigma_px": 0.7, "gamma": 1.3, "noise_sigma_grey": 22.0, "invert": False},
}


def confidence(img, model, z_nm, nm) -> float:
    from napari_cellgen.segment.pipeline import SegmentOptions, segment

    sub = img[:PROBE_SLICES]
    prob = np.zeros(sub.shape, np.float32)
    segment(sub, SegmentOptions(model=model, measure=False, precision="fp32"), pixel_size=(z_nm, nm, nm),
            prob_out=prob)
    return float(np.mean(np.abs(2 * prob - 1)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--model", default="mito-unet-travel")
    ap.add_argument("--out", type=Path, default=HERE.parent / "results" / "pixel_size_guess_probe.json")
    args = ap.parse_args(argv)
    from napari_cellgen.metrics import foreground_iou
    from napari_cellgen.segment.pipeline import SegmentOptions, segment

    vol, gt = load_lucchi(args.data)
    stacks = {"thick": (vol[6::8], gt[6::8] > 0, 40.0), "block": (vol[140:165], gt[140:165] > 0, 5.0)}
    res = {"what": __doc__.split("\n\n")[0], "grid_nm": GRID, "model": model_ref(args.model), "cases": {}}
    for s, (img, truth, z) in stacks.items():
        variants = {f"{s} clean 5 nm": (img, truth, 5.0)}
        for name, d in CASES.items():
            im, m = degrade(img, truth.astype(np.uint8) * 255, d, 0)
            variants[f"{s} {name}"] = (im, m > 0, 5.0 / d["resample"])
        for name, (im, tr, nm) in variants.items():
            t0 = time.perf_counter()
            conf = {g: confidence(im, args.model, z, g) for g in GRID}
            guess = max(conf, key=conf.get)
            row = {"true_nm": nm, "confidence": conf, "guess_nm": guess, "guess_seconds": time.perf_counter() - t0}
            for label, px in (("true", nm), ("guess", guess), ("not told", None)):
                r = segment(im, SegmentOptions(model=args.model, measure=False),
                            pixel_size=(z, px, px) if px else None)
                row[f"iou {label}"] = foreground_iou(r.labels > 0, tr)
            i_true, i_guess = row["iou true"], row["iou guess"]
            steps_off = abs(GRID.index(guess) - min(range(len(GRID)), key=lambda i: abs(GRID[i] - nm)))
            row["within_one_step"] = steps_off <= 1
            row["iou_within_0.02"] = i_guess >= i_true - 0.02
            res["cases"][name] = row
            print(name, f"true {nm:.2f} guess {guess}", {k: round(v, 3) for k, v in row.items()
                                                         if k.startswith("iou ")}, flush=True)
    res["passes"] = all(r["within_one_step"] and r["iou_within_0.02"] for r in res["cases"].values())
    print("passes:", res["passes"])
    res["machine"] = machine()
    res.update(stamp(argv))
    write_json(args.out, res)


if __name__ == "__main__":
    main()
