"""Segment on a GPU: the shipped model through the whole pipeline with ``device="cuda"`` must give the
labels the CPU gives (fp32 on both), and how fast it is. Run on a machine with a GPU (a lent one:
``PYTHONPATH=src python3 benchmarks/gpu_segment_check.py --out $OUT/gpu_segment.json``).

Writes JSON: agreement of the foreground (IoU GPU vs CPU), object counts, and median seconds of 3 runs
on the shipped sample stack, per device.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import tifffile

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "napari_cellgen" / "_data" / "sample" / "lucchi_em.tif"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--image", type=Path, default=SAMPLE)
    ap.add_argument("--devices", default="cpu,cuda")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("gpu_segment.json"))
    args = ap.parse_args(argv)
    import torch

    from napari_cellgen.metrics import foreground_iou
    from napari_cellgen.segment.pipeline import SegmentOptions, segment

    img = tifffile.imread(args.image)
    res = {"image": str(args.image.name), "shape": list(img.shape), "torch": torch.__version__,
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "devices": {}}
    labels = {}
    for dev in args.devices.split(","):
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            out = segment(img, SegmentOptions(measure=False, precision="fp32", device=dev))
            if dev.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        labels[dev] = out.labels
        res["devices"][dev] = {"median_s": statistics.median(times), "times_s": times,
                               "mpix_per_s": img.size / 1e6 / statistics.median(times),
                               "objects": int(len(np.unique(out.labels)) - 1)}
    devs = list(labels)
    if len(devs) == 2:
        res["foreground_iou_between"] = foreground_iou(labels[devs[0]], labels[devs[1]] > 0)
    args.out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
