"""Probe (issue 15): does matching the input's grey levels to Lucchi's help a model travel?

Another lab's EM differs first in its tone curve (gamma, contrast) and noise; the pipeline's
per-slice percentile stretch is linear, so a gamma of 0.5 reaches the network as another image.
Here each slice is mapped onto the grey-level distribution of the Lucchi training volume before the
pipeline: quantiles are read on a Gaussian-smoothed copy (sigma 1.5 px, so noise does not widen
them) and the map is applied to the raw slice.

The rule, written before the run: tone matching is worth building into the pipeline if, on the
thick-section surrogates of ``thick_sections.py`` (pixel size not told, as a user with a bare TIFF),
it raises the mean of "strong" and "mild" for the model "auto" picks there (mito-unet-travel) and
costs at most 0.005 on "clean". The isotropic block 140-164 surrogates of ``transfer.py`` are
reported beside it as a check that was not used to decide.

    python benchmarks/probes/tone_match_probe.py   # -> results/tone_match_probe.json
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
from finetune_gain import PRESETS, degrade  # noqa: E402
from train_default import DATA, load_lucchi  # noqa: E402

QS = np.linspace(0.005, 0.995, 199)
SMOOTH = 1.5


def smoothed_quantiles(img: np.ndarray) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return np.quantile(gaussian_filter(img.astype(np.float32), SMOOTH)[::2, ::2], QS)


def tone_match(stack: np.ndarray, ref_q: np.ndarray) -> np.ndarray:
    out = np.empty(stack.shape, np.float32)
    for i, sl in enumerate(stack):
        q = np.maximum.accumulate(smoothed_quantiles(sl) + np.arange(QS.size) * 1e-4)
        out[i] = np.interp(sl.astype(np.float32), q, ref_q)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=HERE.parent / "results" / "tone_match_probe.json")
    args = ap.parse_args(argv)

    from napari_cellgen.metrics import foreground_iou
    from napari_cellgen.segment.pipeline import SegmentOptions, segment

    vol, gt = load_lucchi(args.data)
    ref_q = np.mean([smoothed_quantiles(s) for s in vol[::10]], axis=0)
    sets = {}
    thick, thick_gt = vol[4::8], gt[4::8] > 0
    sets["thick 40 nm | clean"] = (thick, thick_gt)
    for p in ("strong", "mild"):
        d, m = degrade(thick, thick_gt.astype(np.uint8) * 255, PRESETS[p], 0)
        sets[f"thick 40 nm | {p}"] = (d, m > 0)
    block, block_gt = vol[140:165], gt[140:165] > 0
    for p in ("strong", "mild"):
        d, m = degrade(block, block_gt.astype(np.uint8) * 255, PRESETS[p], 0)
        sets[f"block 140-164 (check) | {p}"] = (d, m > 0)
    models = ("mito-unet-travel", "mito-unet")
    res = {"what": "tone matching to Lucchi's smoothed grey-level quantiles before the pipeline, "
                   "pixel size not told; foreground IoU", "smooth_sigma_px": SMOOTH,
           "models": {m: model_ref(m) for m in models}, "cases": {}}
    for name, (img, truth) in sets.items():
        row = {}
        for model in models:
            for mode in ("as given", "tone matched"):
                x = img if mode == "as given" else tone_match(img, ref_q)
                t0 = time.perf_counter()
                r = segment(x, SegmentOptions(model=model, measure=False))
                row[f"{model} | {mode}"] = {"iou": foreground_iou(r.labels > 0, truth),
                                            "seconds": time.perf_counter() - t0}
        res["cases"][name] = row
        print(name, {k: round(v["iou"], 3) for k, v in row.items()}, flush=True)
    res["machine"] = machine()
    res.update(stamp(argv))
    write_json(args.out, res)


if __name__ == "__main__":
    main()
