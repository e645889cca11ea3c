"""Does the pipeline's pixel-size rescale and anisotropy decision help on EM that is not 5 nm isotropic?

Surrogates built from the Lucchi block the shipped model never trained on (slices 140-164 by
default), each segmented with the whole pipeline (defaults) with and without telling it the
pixel size:

* ``10nm``: resampled to 0.5x in y and x (area), pixel size (5, 10, 10) nm;
* ``7nm``: 0.7x in y and x, (5, 7.1, 7.1) nm;
* ``aniso``: every 8th slice of the full Lucchi volume (40 nm sections, like ssTEM), (40, 5, 5) nm:
  the neighbours are other structures;
* ``aniso10``: both, (40, 10, 10) nm.

Nothing here was tuned: the rescale rule is arithmetic and the anisotropy switch (3x the
training z spacing) was set before this ran. Writes ``benchmarks/results/travel.json``.

    python benchmarks/travel.py            # ~4 min on 2 idle cores
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _provenance import check_unseen, machine, model_ref, stamp, write_json  # benchmarks/ is on sys.path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "lucchi"


def resample(img, mask, f):
    import torch
    from torch.nn import functional as F

    size = (round(img.shape[1] * f), round(img.shape[2] * f))
    t = F.interpolate(torch.from_numpy(img.astype(np.float32))[:, None], size=size, mode="area")[:, 0]
    m = F.interpolate(torch.from_numpy((mask > 0).astype(np.float32))[:, None], size=size, mode="area")[:, 0]
    return t.round().clamp(0, 255).numpy().astype(np.uint8), (m.numpy() >= 0.5)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--model", default="mito-unet")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "travel.json")
    args = ap.parse_args(argv)

    import tifffile

    from napari_cellgen.metrics import foreground_iou
    from napari_cellgen.models.store import resolve
    from napari_cellgen.segment.pipeline import SegmentOptions, segment

    vol = tifffile.imread(args.data / "training.tif")
    gt = tifffile.imread(args.data / "training_groundtruth.tif")
    block, gblock = vol[140:165], gt[140:165]
    aniso, ganiso = vol[4::8], gt[4::8]  # 21 sections 40 nm apart, through the whole volume
    cases = {
        "5nm": (block, gblock > 0, (5.0, 5.0, 5.0)),
        "10nm": (*resample(block, gblock, 0.5), (5.0, 10.0, 10.0)),
        "7nm": (*resample(block, gblock, 0.7), (5.0, 5 / 0.7, 5 / 0.7)),
        "aniso": (aniso, ganiso > 0, (40.0, 5.0, 5.0)),
        "aniso10": (*resample(aniso, ganiso, 0.5), (40.0, 10.0, 10.0)),
    }
    check_unseen(args.model, range(140, 165), "scores as never seen (its 5 nm and 10 nm cases)")
    model_dir = resolve(args.model)
    opts = SegmentOptions(model=str(model_dir), measure=False)
    res = {"what": "foreground IoU of the whole pipeline on resampled / anisotropic Lucchi, with and "
                   "without the pixel size", "model": {**model_ref(model_dir), "given": str(args.model)},
           "cases": {}}
    for name, (img, truth, px) in cases.items():
        row = {"shape": list(img.shape), "pixel_size_nm": list(px)}
        for told in (False, True):
            t0 = time.perf_counter()
            r = segment(img, opts, pixel_size=px if told else None)
            row["with_pixel_size" if told else "without"] = {
                "iou": foreground_iou(r.labels > 0, truth), "seconds": time.perf_counter() - t0,
                "message": r.message}
        res["cases"][name] = row
        print(name, json.dumps(row), flush=True)
    res["machine"] = machine()
    res.update(stamp(argv))
    write_json(args.out, res)


if __name__ == "__main__":
    main()
