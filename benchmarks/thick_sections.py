"""Which shipped model for thick sections (ssTEM-like)? mito-unet vs mito-unet-travel, side by side.

Surrogates of serial-section EM from the Lucchi training volume: every 8th slice (21 sections 40 nm
apart, from slice 4), clean, and degraded with the ``strong`` and ``mild`` presets of
``finetune_gain.py`` (resolution, blur, gamma, noise; defined before either model was trained).
Each model runs through the whole pipeline with the pixel size told and not told (then the
section spacing is measured from the image). Foreground IoU.

The rule, set before this ran: with the model left to the plugin ("auto"), thick sections go to
mito-unet-travel if it loses at most 0.01 to mito-unet on the clean surrogate.
These sections include slices both models trained on (0-139): the comparison is of how each
copes with thick sections and other appearance, not an estimate for unseen tissue.

    python benchmarks/thick_sections.py        # -> results/thick_sections.json, ~4 min on 2 cores
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _provenance import machine, model_ref, stamp, write_json  # noqa: E402
from finetune_gain import PRESETS, degrade  # noqa: E402
from train_default import DATA, load_lucchi  # noqa: E402

MODELS = ("mito-unet", "mito-unet-travel")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--every", type=int, default=8, help="keep every Nth slice (5 nm each)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "thick_sections.json")
    ap.add_argument("--models", nargs="+", default=list(MODELS), help="names or model folders")
    args = ap.parse_args(argv)

    from napari_cellgen.metrics import foreground_iou
    from napari_cellgen.segment.pipeline import SegmentOptions, segment

    vol, gt = load_lucchi(args.data)
    start = args.every // 2
    img, truth = vol[start::args.every], gt[start::args.every] > 0
    z_nm = 5.0 * args.every
    cases = {"clean": (img, truth, (z_nm, 5.0, 5.0))}
    for preset in ("strong", "mild"):
        d, m = degrade(img, truth.astype(np.uint8) * 255, PRESETS[preset], 0)
        f = PRESETS[preset]["resample"]
        cases[preset] = (d, m > 0, (z_nm, 5.0 / f, 5.0 / f))
    res = {"what": "thick-section surrogates: foreground IoU of each shipped model, whole pipeline",
           "sections": f"Lucchi training slices {start}::{args.every} ({img.shape[0]} sections {z_nm:g} nm apart)",
           "models": {m: model_ref(m) for m in args.models}, "cases": {}}
    for name, (im, tr, px) in cases.items():
        row = {"shape": list(im.shape), "pixel_size_nm": list(px)}
        for model in args.models:
            for told in (True, False):
                t0 = time.perf_counter()
                r = segment(im, SegmentOptions(model=model, measure=False), pixel_size=px if told else None)
                row[f"{model} | {'pixel size told' if told else 'not told'}"] = {
                    "iou": foreground_iou(r.labels > 0, tr), "seconds": time.perf_counter() - t0,
                    "message": r.message}
        res["cases"][name] = row
        print(name, {k: round(v["iou"], 3) for k, v in row.items() if isinstance(v, dict)}, flush=True)
    res["machine"] = machine()
    res.update(stamp(argv))
    write_json(args.out, res)


if __name__ == "__main__":
    main()
