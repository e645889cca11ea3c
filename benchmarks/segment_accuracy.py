"""Validation IoU of a segmentation model on the held-out Lucchi slices (140-164).

Scores what ``cellgen segment`` keeps: the whole pipeline at full resolution (normalise,
resize to the model's scale, tiled + blended prediction, resize back, uint8 probabilities,
labelling with hole filling and the minimum size), then foreground IoU (Jaccard) of the
labels (> 0) against the ground truth. The threshold sweep thresholds the same uint8
probabilities (``prob >= t * 255``, as the labelling does), before hole filling and the
minimum size.

    python benchmarks/segment_accuracy.py [--model mito-unet] [--out benchmarks/results/segment_accuracy.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import tifffile
from _provenance import check_unseen, model_ref, stamp, write_json  # run as a script: benchmarks/ is on sys.path

from napari_cellgen.metrics import IoU, foreground_iou
from napari_cellgen.segment.pipeline import SegmentOptions, segment

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "lucchi"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mito-unet")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--first", type=int, default=140, help="first held-out slice")
    defaults = SegmentOptions()
    ap.add_argument("--min-size", type=int, default=defaults.min_size,
                    help="cellgen segment --min-size (default %(default)s)")
    ap.add_argument("--views", "--tta", type=int, default=defaults.views, choices=(1, 2, 4),
                    help="cellgen segment --views: test-time augmentation views (default %(default)s, cellgen's)")
    ap.add_argument("--median", action="store_true", help="3x3x3 median filter on the probabilities (cellgen --median)")
    ap.add_argument("--precision", default=defaults.precision, help="cellgen segment --precision (default: cellgen's)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/segment_accuracy.json"))
    args = ap.parse_args(argv)

    img = tifffile.imread(args.data / "training.tif")[args.first :]
    check_unseen(args.model, range(args.first, args.first + len(img)))
    gt = tifffile.imread(args.data / "training_groundtruth.tif")[args.first :] > 0
    opts = SegmentOptions(model=args.model, device="cpu", views=args.views, median=args.median,
                          min_size=args.min_size, measure=False, precision=args.precision)
    t0 = time.perf_counter()
    got = segment(img, opts)  # as cellgen segment runs it
    t_all = time.perf_counter() - t0
    prob, labels = got.probabilities, got.labels
    assert prob.dtype == np.uint8, prob.dtype  # what cellgen segment writes
    res = {"what": "foreground IoU of cellgen segment's labels (> 0) on the held-out slices, full resolution",
           "model": model_ref(args.model), "views": args.views, "median": args.median, "min_size": args.min_size,
           "precision": args.precision, "precision_used": None,
           "slices": f"{args.first}-{args.first + len(img) - 1}", "thresholds_uint8_prob": {}}
    for t in (0.3, 0.4, 0.5, 0.6, 0.7):
        res["thresholds_uint8_prob"][str(t)] = foreground_iou(prob >= t * 255, gt)
    per_slice = IoU()
    per = [per_slice.add(labels[i], gt[i]) for i in range(len(img))]
    res.update(
        iou_threshold_only=res["thresholds_uint8_prob"][str(opts.threshold)],
        iou_labels=per_slice.value,
        per_slice_iou=per,
        n_objects=got.n_objects,
        pipeline_message=got.message,
        precision_used=(got.options or {}).get("precision"),
        segment_seconds=t_all,
        machine=f"{platform.machine()} {platform.processor() or ''}".strip(),
        cpu_count=os.cpu_count(),
        **stamp(argv),
    )
    write_json(args.out, res)
    print(json.dumps({k: v for k, v in res.items() if k != "per_slice_iou"}, indent=2))


if __name__ == "__main__":
    main()
