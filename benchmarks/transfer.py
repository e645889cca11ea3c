"""Does a segmenter travel to EM that does not look like Lucchi? Models side by side on surrogates.

Surrogates of "another lab's volume", built from the Lucchi block no shipped model trained on
(slices 140-164), each defined before the appearance augmentation existed and never tuned on:

* ``strong``, ``mild``, ``inverted``: ``finetune_gain.PRESETS`` (resampled to 0.5x or 0.6x, blur,
  gamma 0.5, noise sigma 25-30 grey levels; ``inverted`` also inverts the contrast);
* ``10nm``: resampled to 0.5x (area), nothing else (``travel.py``).

Each model segments each surrogate with the whole pipeline (defaults), once without and once with
the pixel size (the pipeline then rescales to the model's training pixel size); plus the clean
block. Foreground IoU against the resampled masks.

    python benchmarks/transfer.py --models mito-unet runs/v4/last   # ~3 min per model on 2 cores

Writes ``benchmarks/results/transfer.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _provenance import check_unseen, machine, model_ref, stamp, write_json  # benchmarks/ is on sys.path
from finetune_gain import PRESETS, degrade
from travel import resample

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "lucchi"


def surrogates(img, gt) -> dict:
    """name -> (image, truth mask, pixel size in nm (z, y, x))."""
    cases = {"clean": (img, gt > 0, (5.0, 5.0, 5.0))}
    for name, p in PRESETS.items():
        im, m = degrade(img, gt, p, seed=0)
        px = 5.0 / p["resample"]
        cases[name] = (im, m > 0, (5.0, px, px))
    im, m = resample(img, gt, 0.5)
    cases["10nm"] = (im, m, (5.0, 10.0, 10.0))
    return cases


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--models", nargs="+", default=["mito-unet"])
    ap.add_argument("--slices", default="140-164")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "transfer.json")
    args = ap.parse_args(argv)

    import tifffile

    from napari_cellgen.metrics import foreground_iou
    from napari_cellgen.models.store import resolve
    from napari_cellgen.segment.pipeline import SegmentOptions, segment

    a, b = (int(v) for v in args.slices.split("-"))
    img = tifffile.imread(args.data / "training.tif")[a:b + 1]
    gt = tifffile.imread(args.data / "training_groundtruth.tif")[a:b + 1]
    cases = surrogates(img, gt)
    res = {"what": "foreground IoU of the whole pipeline on appearance-shifted surrogates of Lucchi "
                   f"slices {args.slices}, without / with the pixel size", "presets": PRESETS, "models": []}
    for name in args.models:
        check_unseen(name, range(a, b + 1))
        model_dir = resolve(name)
        opts = SegmentOptions(model=str(model_dir), measure=False)
        row = {"model": {**model_ref(model_dir), "given": name}, "cases": {}}
        for case, (im, truth, px) in cases.items():
            told = (False, True) if case != "clean" else (False,)
            out = {}
            for t in told:
                t0 = time.perf_counter()
                r = segment(im, opts, pixel_size=px if t else None)
                out["with_pixel_size" if t else "without"] = {
                    "iou": round(foreground_iou(r.labels > 0, truth), 4),
                    "seconds": round(time.perf_counter() - t0, 1)}
            row["cases"][case] = out
            print(name, case, json.dumps(out), flush=True)
        res["models"].append(row)
    res["machine"] = machine()
    res.update(stamp(argv))
    write_json(args.out, res)


if __name__ == "__main__":
    main()
