"""Speed and peak memory of the whole ``cellgen segment`` pipeline (read, infer, blend,
post-process, measure, write), run as a subprocess under ``/usr/bin/time``-style
accounting (peak RSS from ``resource.getrusage`` of the child).

    python benchmarks/segment_speed.py                 # the 165-slice Lucchi volume
    python benchmarks/segment_speed.py --big 2         # a ~2 GB stack tiled from it

The big stack is written zlib-compressed (so it is read page by page, not memory
mapped) to a temporary folder and removed afterwards. Each run writes its own file
(``benchmarks/results/segment_speed_<UTC time>.json`` unless ``--out``), never merged into an
older one, with the model's card name and weights' sha256, the command and the date.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from _provenance import (  # run as a script: benchmarks/ is on sys.path
    model_ref,
    new_path,
    seen_lucchi_slices,
    stamp,
    write_json,
)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "lucchi"


def run_cli(args: list[str]) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "napari_cellgen.cli", *args], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"cellgen failed:\n{proc.stderr[-2000:]}")
    return {"wall_s": wall, "peak_rss_mb_max_child": usage.ru_maxrss / 1024, "stderr_tail": proc.stderr[-300:]}


def make_big(path: Path, gb: float) -> tuple[int, int, int]:
    src = tifffile.imread(DATA / "training.tif")
    ny, nx = 3, 4  # 2304 x 4096 per slice
    h, w = src.shape[1] * ny, src.shape[2] * nx
    nz = int(np.ceil(gb * 1e9 / (h * w)))
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for z in range(nz):
            s = src[z % len(src)]
            plane = np.block([[np.flip(s, axis=(i + j) % 2) for j in range(nx)] for i in range(ny)])
            tw.write(plane, compression="zlib", contiguous=False, photometric="minisblack")
    return nz, h, w


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--big", type=float, default=0, help="also segment a stack of this many GB")
    ap.add_argument("--model", default="mito-unet")
    ap.add_argument("--views", "--tta", type=int, default=None, choices=(1, 2, 4),
                    help="cellgen segment --views VIEWS (default: cellgen's default)")
    ap.add_argument("--median", action="store_true", help="cellgen segment --median")
    ap.add_argument("--precision", choices=("fp32", "int8"), default=None,
                    help="cellgen segment --precision (default: cellgen's, fp32)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run the whole volume N times; report the median wall time and every run's")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON to write (default: a new benchmarks/results/segment_speed_<UTC time>.json)")
    args = ap.parse_args(argv)
    out = args.out or new_path(Path("benchmarks/results/segment_speed.json"))
    res = {"model": model_ref(args.model), "machine": f"{os.cpu_count()} cores",
           "torch_threads": os.environ.get("OMP_NUM_THREADS", "default"), **stamp(argv)}
    opts = ([f"--views={args.views}"] if args.views else []) + (["--median"] if args.median else []) + (
        [f"--precision={args.precision}"] if args.precision else [])
    unseen = not seen_lucchi_slices(args.model, range(140, 165))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.big:
            big = tmp / "big.tif"
            shape = make_big(big, args.big)
            r = run_cli(["segment", str(big), "-o", str(tmp / "big_labels.tif"), "--model", args.model,
                         "--quiet", *opts])
            vox = int(np.prod(shape))
            res["big"] = {"shape": shape, "gigabytes": vox / 1e9, "options": opts, **r,
                          "mpix_per_s": vox / 1e6 / r["wall_s"]}
        else:
            vol = DATA / "training.tif"
            shape = tifffile.TiffFile(vol).series[0].shape
            runs = [run_cli(["segment", str(vol), "-o", str(tmp / "labels.tif"), "--csv", str(tmp / "o.csv"),
                             "--model", args.model, "--quiet", *opts]) for _ in range(max(1, args.repeat))]
            walls = [r["wall_s"] for r in runs]
            r = {**runs[-1], "wall_s": float(np.median(walls))}
            # accuracy of the same run on the block 140-164, when the model never trained on it
            if unseen:
                lab = tifffile.imread(tmp / "labels.tif")[140:] > 0
                gt = tifffile.imread(DATA / "training_groundtruth.tif")[140:] > 0
                r["iou_slices_140_164"] = float((lab & gt).sum() / (lab | gt).sum())
            else:
                r["iou_slices_140_164"] = None  # the model trained on them: no estimate
            vox = int(np.prod(shape))
            # lucchi, lucchi_views1, lucchi_views4_median ...
            key = "_".join(["lucchi", *(o[2:].replace("=", "") for o in opts)])
            res[key] = {"shape": list(shape), "options": opts, **r, "mpix_per_s": vox / 1e6 / r["wall_s"],
                        "runs_wall_s": walls, "runs_mpix_per_s": [vox / 1e6 / w for w in walls]}
    write_json(out, res)
    print(json.dumps(res, indent=2))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
