"""Does the tiling's handling of the image border matter? Validation IoU with and without a
mirrored margin, on whole slices and on each slice cut into four separate images (four times
as much image border).

Each held-out Lucchi slice (140-164) is segmented at model resolution with the default two
views (image + 180° rotation, logits averaged), threshold 0.5, scored against the
area-downsampled ground truth, like ``benchmarks/tta_views.py``.

    python benchmarks/border_margin.py [--model mito-unet] [--out benchmarks/results/border_margin.json]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from _provenance import model_ref, stamp, write_json  # run as a script: benchmarks/ is on sys.path
from tta_views import DATA, held_out

from napari_cellgen._progress import run
from napari_cellgen.metrics import foreground_iou
from napari_cellgen.segment.predict import make_forward
from napari_cellgen.segment.tiling import predict_plane


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mito-unet")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--first", type=int, default=140, help="first held-out slice")
    ap.add_argument("--borders", type=int, nargs="+", default=[0, 16], help="mirrored margins to compare (px)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/border_margin.json"))
    args = ap.parse_args(argv)

    model, card, regions, truth, slices, divisor = held_out(args.model, args.data, args.first)

    fn = make_forward(model, "cpu", tta=2)  # cellgen's default views, as it runs them

    def predict(planes, border):
        return run(predict_plane(fn, planes, card["tile"], card["overlap"], 4, divisor, border=border))

    def quadrants(planes, border):
        h, w = planes.shape[1] // 2, planes.shape[2] // 2
        out = np.zeros(planes.shape[1:], np.float32)
        for ys in (slice(0, h), slice(h, None)):
            for xs in (slice(0, w), slice(w, None)):
                out[ys, xs] = predict(planes[:, ys, xs], border)
        return out

    scores = {}
    for border in args.borders:
        for name, how in (("whole slices", predict), ("quarter slices", quadrants)):
            pred = np.stack([how(r.planes, border) for r in regions]) >= 0.5
            scores[f"margin {border} px, {name}"] = foreground_iou(pred, truth)
            print(f"margin {border} px, {name}: {scores[f'margin {border} px, {name}']:.4f}", flush=True)
    res = {
        "what": "foreground IoU at model resolution (threshold 0.5, views: image + 180° rotation) with a mirrored "
                "margin of N px at the image border; 'quarter slices' segments each quarter as its own image",
        "model": model_ref(args.model), "slices": slices,
        "iou": scores, "machine": f"{os.cpu_count()} cores", "torch": torch.__version__,
        **stamp(argv),
    }
    write_json(args.out, res)


if __name__ == "__main__":
    main()
