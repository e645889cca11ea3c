"""How much test-time augmentation steadies the segmenter: IoU of each single view and of their averages.

Each view is the model applied to a flipped copy of the held-out Lucchi slices
(140-164), flipped back; views are averaged as logits, as ``cellgen segment --tta``
does. Scored at model resolution against the area-downsampled ground truth
(threshold 0.5), like the training loop's validation.

    python benchmarks/tta_views.py [--model mito-unet] [--out benchmarks/results/tta_views.json]

``--border 16`` adds the 16-px mirrored margin at the image border that the tiling
used before 2026-12-02 (half the card's overlap), to compare.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from pathlib import Path

import numpy as np
import tifffile
import torch
from _provenance import check_unseen, model_ref, stamp, write_json  # run as a script: benchmarks/ is on sys.path

from napari_cellgen._progress import run
from napari_cellgen.metrics import foreground_iou
from napari_cellgen.models.store import load_model
from napari_cellgen.segment.predict import TTA_VIEWS
from napari_cellgen.segment.tiling import predict_plane
from napari_cellgen.train.data import build_regions

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "lucchi"
# the four views of ``cellgen segment --tta 4``, named
FLIPS = dict(zip(("identity", "flip x", "flip y", "rotate 180"), TTA_VIEWS[4], strict=True))


def held_out(model_name, data: Path, first: int, last: int | None = None):
    """The model (eval mode), its card, slices ``first``..``last`` (default: to the end) as regions,
    their truth masks, the slice range as text and the model's size divisor."""
    img = tifffile.imread(data / "training.tif")
    gt = tifffile.imread(data / "training_groundtruth.tif")
    last = img.shape[0] - 1 if last is None else last
    check_unseen(model_name, range(first, last + 1))
    model, card = load_model(model_name)
    model.eval()
    regions = build_regions(img, gt, list(range(first, last + 1)), card)
    truth = np.stack([r.mask >= 0.5 for r in regions])
    return model, card, regions, truth, f"{first}-{last}", 2 ** int(card["architecture"]["depth"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mito-unet")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--first", type=int, default=140, help="first held-out slice")
    ap.add_argument("--border", type=int, default=0, help="mirrored margin at the image border (pixels)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/tta_views.json"))
    args = ap.parse_args(argv)

    model, card, regions, truth, slices, divisor = held_out(args.model, args.data, args.first)

    def logits(dims):
        def fn(batch):
            with torch.inference_mode():
                x = torch.from_numpy(np.ascontiguousarray(batch))
                y = model(x.flip(dims) if dims else x)
                return (y.flip(dims) if dims else y)[:, 0].numpy()

        return np.stack([run(predict_plane(fn, r.planes, card["tile"], card["overlap"], 4, divisor,
                                           border=args.border))
                         for r in regions])

    def iou(lg):
        return foreground_iou(lg >= 0, truth)

    views = {name: logits(dims) for name, dims in FLIPS.items()}
    res = {
        "what": "foreground IoU at model resolution, threshold 0.5, of single views and of averaged views",
        "model": model_ref(args.model),
        "slices": slices, "border": args.border,
        "single": {k: iou(v) for k, v in views.items()},
        "pairs": {f"{a} + {b}": iou((views[a] + views[b]) / 2) for a, b in itertools.combinations(views, 2)},
        "all four": iou(sum(views.values()) / 4),
        "machine": f"{os.cpu_count()} cores", "torch": torch.__version__,
        **stamp(argv),
    }
    write_json(args.out, res)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
