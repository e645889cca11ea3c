"""How much the IoU of a block of slices varies with its content: the shipped model on every
25-slice block of the Lucchi training volume, with the default two views.

Slices 0-139 trained the model, so their blocks are not a test of it; they show how far
one block's IoU can sit from another's for the same model, which is what the single
held-out block (140-164) cannot show. Model resolution, threshold 0.5, views image + 180°
rotation (logits averaged), like ``benchmarks/tta_views.py``.

    python benchmarks/block_iou.py [--model mito-unet] [--block 25] [--out benchmarks/results/block_iou.json]
"""

from __future__ import annotations

import argparse
import json
import os
from itertools import pairwise
from pathlib import Path

import torch
from _provenance import model_ref, stamp, write_json  # run as a script: benchmarks/ is on sys.path
from tta_views import DATA, held_out

from napari_cellgen._progress import run
from napari_cellgen.metrics import IoU
from napari_cellgen.segment.predict import make_forward
from napari_cellgen.segment.tiling import predict_plane


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mito-unet")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--block", type=int, default=25, help="slices per block")
    ap.add_argument("--first-val", type=int, default=140, help="the first held-out slice (the rest trained)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/block_iou.json"))
    args = ap.parse_args(argv)

    model, card, regions, truth, _, divisor = held_out(args.model, args.data, 0)

    fn = make_forward(model, "cpu", tta=2)  # cellgen's default views, as it runs them

    pred = [run(predict_plane(fn, r.planes, card["tile"], card["overlap"], 4, divisor)) >= 0.5 for r in regions]
    n, v = len(regions), args.first_val

    def iou(a, b):  # pooled over slices a..b-1
        m = IoU()
        for z in range(a, b):
            m.add(pred[z], truth[z])
        return m.value

    # training blocks end where validation starts; the held-out block is one block
    edges = [*range(0, v, args.block), v, n]
    blocks = {f"{a}-{b - 1}{' (held out)' if a >= v else ''}": iou(a, b) for a, b in pairwise(edges) if b > a}
    res = {
        "what": "foreground IoU per block of slices at model resolution (threshold 0.5, views: image + 180° "
                "rotation); the blocks before the held-out one trained the model",
        "model": model_ref(args.model), "blocks": blocks,
        "all training slices": iou(0, v), "held out": iou(v, n),
        "machine": f"{os.cpu_count()} cores", "torch": torch.__version__, **stamp(argv),
    }
    write_json(args.out, res)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
