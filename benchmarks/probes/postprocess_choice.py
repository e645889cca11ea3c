"""Choice (issue 15): two post-processing candidates for the default pipeline, on CV fold models.

Most of the segmenter's remaining error is within 2 px of a true boundary and in whole ambiguous
objects (docs/models.md). Two cheap candidates aim at those without retraining:

- ``logit``: bring the half-resolution result back to the image's pixels by interpolating the logits
  rather than the probabilities (``SegmentOptions(upsample="logit")``);
- ``z``: average each slice's probabilities with its two neighbours' (1/4, 1/2, 1/4), so an object is
  not kept in one slice and dropped in the next (``SegmentOptions(z_smooth=True)``; volumes only);
- ``logit+z``: both.

The rule, written and committed before any of its numbers (2026-12-08):

- Models: the 8,000-step CV recipe (``cv_scratch8k_bf16.json``) retrained for folds 0 and 1
  (held out 0-32 and 33-65; neither fold chose anything so far), each scored on its own held-out
  block only, with the CV protocol's metric (whole pipeline, defaults, fp32, block alone).
- For each candidate and fold, delta = IoU(candidate) - IoU(default).
- A candidate qualifies if its delta is >= +0.002 on both folds and its extra work costs <= 5 % of
  the default pipeline's seconds per slice (measured here on one 768 x 1024 slice as the median of
  20 runs of the added operation, against the recorded whole-process 2.96 MPix/s).
- The qualifying candidate with the largest mean delta becomes the default; none qualifying, the
  defaults stay and the numbers are reported. Folds 2-4 are not scored (their models are not kept);
  slices 140-164 are not used.

    python benchmarks/cv.py --name scratch8k_bf16 --only 0,1 --runs runs/refold --out runs/refold/cv_refold.json \
        -- --steps 8000 --lr 2e-3 --fg-prob 0.4 --hard 0.2 --ema 0.998 --dice batch --context 2 --precision bf16
    python benchmarks/probes/postprocess_choice.py --runs runs/refold/scratch8k_bf16
    # -> results/postprocess_choice.json
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
from cv import folds  # noqa: E402
from train_default import DATA, load_lucchi  # noqa: E402

CANDIDATES = {"default": {}, "logit": {"upsample": "logit"}, "z": {"z_smooth": True},
              "logit+z": {"upsample": "logit", "z_smooth": True}}
MIN_GAIN = 0.002
MAX_COST = 0.05
DEFAULT_MPIX_S = 2.96  # whole `cellgen segment`, v4 int8, idle 2-core CPU (docs/benchmarks.md)


def op_seconds(repeat: int = 20) -> dict:
    """Median seconds of each candidate's added operation on one 768 x 1024 slice."""
    from napari_cellgen.segment.postprocess import smooth_z_at
    from napari_cellgen.segment.predict import upsample_probs

    rng = np.random.default_rng(0)
    low = rng.random((384, 512), dtype=np.float32)
    three = (rng.random((3, 768, 1024)) * 255).astype(np.uint8)

    def med(fn):
        ts = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    base = med(lambda: upsample_probs(low, (768, 1024), "probability"))
    logit = med(lambda: upsample_probs(low, (768, 1024), "logit"))
    return {"upsample_probability": base, "upsample_logit": logit, "logit": max(0.0, logit - base),
            "z": med(lambda: smooth_z_at(three, 1))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--runs", type=Path, default=Path("runs/refold/scratch8k_bf16"))
    ap.add_argument("--folds", default="0,1")
    ap.add_argument("--out", type=Path, default=HERE.parent / "results" / "postprocess_choice.json")
    args = ap.parse_args(argv)

    from napari_cellgen.metrics import foreground_iou
    from napari_cellgen.segment.pipeline import SegmentOptions, segment

    img, gt = load_lucchi(args.data)
    blocks = folds(img.shape[0], 5)
    rows = []
    for f in (int(v) for v in args.folds.split(",")):
        zs = blocks[f]
        model = args.runs / f"fold{f}" / "last"
        row = {"fold": f, "held_out": f"{zs[0]}-{zs[-1]}", "model": model_ref(model), "iou": {}, "seconds": {}}
        for name, kw in CANDIDATES.items():
            t0 = time.perf_counter()
            lab = segment(img[zs[0]:zs[-1] + 1], SegmentOptions(model=str(model), measure=False, precision="fp32",
                                                                 **kw)).labels
            row["seconds"][name] = round(time.perf_counter() - t0, 2)
            row["iou"][name] = foreground_iou(lab, gt[zs[0]:zs[-1] + 1])
            print(f, name, round(row["iou"][name], 4), flush=True)
        rows.append(row)

    slice_s = 768 * 1024 / 1e6 / DEFAULT_MPIX_S
    ops = op_seconds()
    cost = {"logit": ops["logit"] / slice_s, "z": ops["z"] / slice_s}
    cost["logit+z"] = cost["logit"] + cost["z"]
    verdict = {}
    for name in CANDIDATES:
        if name == "default":
            continue
        deltas = [r["iou"][name] - r["iou"]["default"] for r in rows]
        verdict[name] = {"deltas": deltas, "mean_delta": statistics.fmean(deltas), "cost": cost[name],
                         "qualifies": min(deltas) >= MIN_GAIN and cost[name] <= MAX_COST}
    ok = [n for n, v in verdict.items() if v["qualifies"]]
    chosen = max(ok, key=lambda n: verdict[n]["mean_delta"]) if ok else "default"
    write_json(args.out, {
        "what": "post-processing candidates on CV fold models, each on its own held-out block (rule in docstring)",
        "rule": {"min_gain_each_fold": MIN_GAIN, "max_cost": MAX_COST, "slice_seconds_default": slice_s},
        "folds": rows, "op_seconds": ops, "verdict": verdict, "chosen": chosen,
        "machine": machine(), **stamp(argv)})
    print("chosen:", chosen, {n: round(v["mean_delta"], 4) for n, v in verdict.items()})


if __name__ == "__main__":
    main()
