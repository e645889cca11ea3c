"""Validation IoU of a segmentation model on the held-out Lucchi slices (140-164).

Runs the full inference path at full resolution (normalise, resize to the model's
scale, tiled + blended prediction, resize back) and reports foreground IoU (Jaccard)
of the thresholded probabilities ("raw") and of the post-processed labels
(hole filling + minimum size, as the plugin outputs them).

    python benchmarks/segment_accuracy.py [--model mito-unet] [--out benchmarks/results/segment_accuracy.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import tifffile

from napari_cellgen._progress import run
from napari_cellgen.segment.pipeline import get_model
from napari_cellgen.segment.postprocess import label_stack
from napari_cellgen.segment.predict import predict_stack

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "lucchi"


def iou(a, b):
    return float(np.logical_and(a, b).sum() / max(1, np.logical_or(a, b).sum()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mito-unet")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--first", type=int, default=140, help="first held-out slice")
    ap.add_argument("--min-size", type=int, default=200)
    ap.add_argument("--tta", type=int, nargs="?", const=4, default=1, choices=(1, 2, 4), metavar="VIEWS",
                    help="test-time augmentation views (default 1: the raw model; cellgen's default is 2)")
    ap.add_argument("--median", action="store_true", help="3x3x3 median filter on the probabilities (cellgen --median)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/segment_accuracy.json"))
    args = ap.parse_args(argv)

    img = tifffile.imread(args.data / "training.tif")[args.first :]
    gt = tifffile.imread(args.data / "training_groundtruth.tif")[args.first :] > 0
    model, card = get_model(args.model, "cpu")  # as cellgen segment runs it
    t0 = time.perf_counter()
    prob = run(predict_stack(model, card, img, np.zeros(img.shape, np.float32), tta=args.tta))
    t_pred = time.perf_counter() - t0
    res = {"model": card.get("name"), "tta": args.tta, "median": args.median,
           "slices": f"{args.first}-{args.first + len(img) - 1}", "thresholds": {}}
    for t in (0.3, 0.4, 0.5, 0.6, 0.7):
        res["thresholds"][str(t)] = iou(prob >= t, gt)
    labels = np.zeros(img.shape, np.uint32)
    n = run(label_stack(prob, labels, threshold=0.5, min_size=args.min_size, median=args.median))
    res.update(
        iou_raw=res["thresholds"]["0.5"],
        iou_postprocessed=iou(labels > 0, gt),
        per_slice_iou=[iou(labels[i] > 0, gt[i]) for i in range(len(img))],
        n_objects=n,
        predict_seconds=t_pred,
        machine=f"{platform.machine()} {platform.processor() or ''}".strip(),
        cpu_count=__import__("os").cpu_count(),
        card_val_iou=card.get("metrics", {}).get("val_iou"),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    print(json.dumps({k: v for k, v in res.items() if k != "per_slice_iou"}, indent=2))


if __name__ == "__main__":
    main()
