"""A stack of generated tiles, segmented as one stack: does it come back as its masks? (issue 14)

24 masks of 256 x 256 are cropped from the held-out ground truth (slices 140-163 of the Lucchi
training volume, one per slice, each with mitochondria), the shipped generator draws one image
per mask (``cellgen sample --masks``), and the stack of 24 generated images is segmented with
``cellgen segment`` three ways: as given (``--slices auto``, the default, which must notice
that the tiles are unrelated), with ``--2d``, and forced as a volume (``--slices volume``, the
behaviour before issue 14). Reports the foreground IoU of each tile against its mask (mean and
min) and pooled over the stack, plus the adjacent-slice correlation the detector saw.

    python benchmarks/generated_stack.py [--work DIR] [--out benchmarks/results/generated_stack.json]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from _provenance import generator_ref, model_ref, stamp, write_json  # run as a script: benchmarks/ is on sys.path

DATA = Path("/work/shared/data/lucchi/training_groundtruth.tif")


def make_masks(truth: np.ndarray, n: int, size: int, first: int, seed: int) -> np.ndarray:
    """One ``size``² crop per slice ``first..first+n-1`` with at least 3 % mitochondria."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    out = []
    for z in range(first, first + n):
        fg = truth[z] > 0
        for _ in range(200):
            y = int(rng.integers(0, fg.shape[0] - size + 1))
            x = int(rng.integers(0, fg.shape[1] - size + 1))
            crop = fg[y : y + size, x : x + size]
            if crop.mean() >= 0.03:
                break
        out.append(ndi.label(crop)[0].astype(np.uint16))
    return np.stack(out)


def ious(pred: np.ndarray, masks: np.ndarray) -> tuple[list[float], float]:
    """Each tile's foreground IoU and the IoU pooled over the stack."""
    from napari_cellgen.metrics import IoU

    pooled = IoU()
    per = [pooled.add(a, b) for a, b in zip(pred, masks, strict=True)]
    return per, pooled.value


def cellgen(*args: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    got = subprocess.run([sys.executable, "-m", "napari_cellgen", *args], capture_output=True, text=True)
    if got.returncode:
        raise SystemExit(f"cellgen {' '.join(args)} failed:\n{got.stderr}")
    return time.perf_counter() - t0, got.stderr


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA, help="Lucchi training ground truth")
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--first", type=int, default=140, help="first slice (140-164 are held out)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="keep masks, images and labels here")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/generated_stack.json"))
    args = ap.parse_args(argv)

    from napari_cellgen.segment.slices import THRESHOLD, adjacent_correlation

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        masks_p, gen_p = work / "masks.tif", work / "generated.tif"
        masks = make_masks(tifffile.imread(args.data), args.n, 256, args.first, args.seed)
        tifffile.imwrite(masks_p, masks)
        commands = {"sample": ["sample", "--masks", str(masks_p), "-o", str(gen_p), "--seed", str(args.seed),
                               "--quiet"]}
        t_sample, _ = cellgen(*commands["sample"])
        images = tifffile.imread(gen_p)
        runs = {}
        for key, extra in (("auto", []), ("2d", ["--2d"]), ("volume", ["--slices", "volume"])):
            lab_p = work / f"labels_{key}.tif"
            commands[key] = ["segment", str(gen_p), "-o", str(lab_p), "--quiet", *extra]
            secs, err = cellgen(*commands[key])
            per, pooled = ious(tifffile.imread(lab_p), masks)
            runs[key] = {"mean_iou": float(np.mean(per)), "min_iou": min(per), "pooled_iou": pooled,
                         "per_tile_iou": [round(v, 4) for v in per], "seconds": round(secs, 1),
                         "stderr": [ln for ln in err.splitlines() if ln.strip()][-3:]}
            print(f"{key:7s} mean IoU {runs[key]['mean_iou']:.3f} (min {runs[key]['min_iou']:.3f}, "
                  f"pooled {pooled:.3f}) in {secs:.0f} s")
    result = {
        "what": "24 generated 256x256 tiles segmented as one stack, foreground IoU against their masks",
        "model": model_ref(None), "generator": generator_ref(None),  # cellgen's defaults, as run below
        **stamp(argv),
        "cellgen_commands": {k: "cellgen " + " ".join(Path(a).name if "/" in a else a for a in v)
                             for k, v in commands.items()},
        "masks": f"slices {args.first}-{args.first + args.n - 1} of {args.data.name} (held out), one random "
                 f"256x256 crop each with >= 3 % mitochondria, seed {args.seed}",
        "sample_seconds": round(t_sample, 1),
        "adjacent_correlation": {"generated": adjacent_correlation(images), "threshold": THRESHOLD},
        "runs": runs,
    }
    write_json(args.out, result, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
