"""What the correction loop asks a model to learn: the error regions of painted slices, described.

For a 20-slice Lucchi block (``--block``) and its corrected slices (``--slices``, absolute slice
numbers), the shipped model segments the block (whole pipeline, defaults) and every error region
of at least ``--min-error`` px that ``correction_loop.py`` would paint is described: missed (painted
in) or false (erased), its size, its largest inscribed half-width (a rim along an object is a few
px; a whole object is more), whether a missed part touches an object the model found, and the
model's mean probability there.

    python benchmarks/correction_errors.py --block 60 --slices 64,60      # ~1 min on 2 cores

Writes ``benchmarks/results/correction_errors_BLOCK.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _provenance import check_unseen, model_ref, stamp, write_json  # noqa: E402
from correction_loop import DATA, paint_fixes  # noqa: E402


def describe(labels, truth, prob, min_error: int) -> list[dict]:
    from scipy import ndimage as ndi

    _, fix = paint_fixes(labels, truth, min_error)
    out = []
    for kind, part in (("missed", fix & (truth > 0)), ("false", fix & (truth == 0))):
        lab, n = ndi.label(part)
        for i in range(1, n + 1):
            m = lab == i
            if m.sum() < 50:  # slivers left where a region mixes both kinds
                continue
            row = {"kind": kind, "pixels": int(m.sum()),
                   "half_width_px": round(float(ndi.distance_transform_edt(m).max()), 1),
                   "model_probability": round(float(prob[m].mean()) / 255, 3)}
            if kind == "missed":
                row["touches_found_object"] = bool((ndi.binary_dilation(m) & (labels > 0)).any())
            out.append(row)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--model", default="mito-unet")
    ap.add_argument("--block", type=int, required=True)
    ap.add_argument("--slices", required=True, help="absolute slice numbers, e.g. 64,60")
    ap.add_argument("--min-error", type=int, default=300)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    import tifffile

    from napari_cellgen.models.store import resolve
    from napari_cellgen.segment.pipeline import SegmentOptions, segment

    lo = args.block
    img = tifffile.imread(args.data / "training.tif")[lo:lo + 20]
    gt = tifffile.imread(args.data / "training_groundtruth.tif")[lo:lo + 20]
    check_unseen(args.model, range(lo, lo + 20))
    model_dir = resolve(args.model)
    r = segment(img, SegmentOptions(model=str(model_dir), measure=False))
    res = {"what": "error regions the correction loop paints, described", "block": [lo, lo + 19],
           "model": {**model_ref(model_dir), "given": args.model}, "slices": {}}
    for z in (int(v) for v in args.slices.split(",")):
        rows = describe(r.labels[z - lo], gt[z - lo], r.probabilities[z - lo], args.min_error)
        res["slices"][str(z)] = rows
        for row in rows:
            print(z, row, flush=True)
    res.update(stamp(argv))
    write_json(args.out or HERE / "results" / f"correction_errors_{lo}.json", res)


if __name__ == "__main__":
    main()
