"""Generate on a GPU: the shipped generator loaded with ``device="cuda"`` must make the images the CPU
makes (the same seeded noise, drawn on the CPU stream and moved), and how fast it is. Run on a machine
with a GPU (a lent one; diffusers travels as a zip, see ``benchmarks/device_generator.sh``)::

    PYTHONPATH=src:/tmp/site python3 benchmarks/gpu_generate_check.py --out $OUT/gpu_generate.json

Writes JSON: per device the median seconds per 256x256 sample (new pairs, batch 8, 25 steps), and the
grey-level difference of the CUDA images from the CPU ones (mean and 99th percentile of |difference|).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default=None, help="generator name or folder (default: the shipped one)")
    ap.add_argument("--devices", default="cpu,cuda")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("gpu_generate.json"))
    args = ap.parse_args(argv)
    import torch

    from napari_cellgen.generate.sample import sample_sync
    from napari_cellgen.generate.store import load_generator

    res = {"torch": torch.__version__, "n": args.n, "steps": 25, "batch": args.n,
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "devices": {}}
    images = {}
    for dev in args.devices.split(","):
        gen = load_generator(args.generator, device=dev)
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            out = sample_sync(gen, None, n=args.n, seed=3, batch_size=args.n)
            if dev.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        images[dev] = out.images
        res["devices"][dev] = {"median_s_per_sample": statistics.median(times) / args.n, "times_s": times}
    if len(images) == 2:
        a, b = (images[d].astype(np.int16) for d in args.devices.split(","))
        diff = np.abs(a - b)
        res["cuda_vs_cpu_grey_levels"] = {"mean_abs": float(diff.mean()), "p99_abs": float(np.percentile(diff, 99)),
                                          "max_abs": int(diff.max()), "same_shape": a.shape == b.shape}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
