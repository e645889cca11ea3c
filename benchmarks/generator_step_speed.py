"""Seconds per generator training step on this machine, fp32 vs ``--precision bf16`` (issue 16).

Adapts the shipped generator (``mito-gen``: its VAE, then its denoiser) on Lucchi slices with the
default configuration (VAE batch 8 x 128², denoiser batch 8 latent crops of 32², 3/4 of the steps on
half-size crops with 4x the batch), exactly as ``cellgen train-generator --generator mito-gen`` does,
once per precision. Each step's wall time is taken between the progress reports of the stage; the
median after ``--warmup`` steps is reported (validation steps excluded: ``val_every`` is beyond the run).

    python benchmarks/generator_step_speed.py --steps 30      # -> results/generator_step_speed.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _provenance import generator_ref, machine, stamp, write_json  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data" / "lucchi"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default="mito-gen")
    ap.add_argument("--slices", type=int, default=8, help="the first N training slices")
    ap.add_argument("--steps", type=int, default=30, help="steps per stage")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "generator_step_speed.json")
    args = ap.parse_args(argv)

    import tifffile
    import torch

    from napari_cellgen._progress import run
    from napari_cellgen.generate.train import GeneratorConfig, train_generator

    torch.set_num_threads(args.threads)
    images = tifffile.imread(DATA / "training.tif")[: args.slices]
    rows = {}
    for precision in ("fp32", "bf16"):
        stamps: dict[str, list[float]] = {"vae": [], "diffusion": []}

        def seen(p, stamps=stamps):
            if p.stage in stamps and p.done:
                stamps[p.stage].append(time.perf_counter())

        cfg = GeneratorConfig(vae_steps=args.steps, diffusion_steps=args.steps, val_every=10**6,
                              precision=precision, seed=0, threads=args.threads)
        with tempfile.TemporaryDirectory() as tmp:
            run(train_generator(images, None, Path(tmp) / "gen", cfg, val_slices=[], init=args.generator), seen)
        rows[precision] = {}
        for stage, t in stamps.items():
            steps = [b - a for a, b in zip(t[:-1], t[1:], strict=True)][args.warmup:]
            rows[precision][stage] = {"median_s_per_step": statistics.median(steps), "min_s": min(steps),
                                      "max_s": max(steps), "steps_timed": len(steps)}
        print(precision, {s: round(v["median_s_per_step"], 3) for s, v in rows[precision].items()}, flush=True)
    for stage in ("vae", "diffusion"):
        rows["bf16"][stage]["speedup_vs_fp32"] = (rows["fp32"][stage]["median_s_per_step"]
                                                  / rows["bf16"][stage]["median_s_per_step"])
    write_json(args.out, {"what": "seconds per generator training step (adapting the shipped generator), fp32 vs bf16",
                          "generator": generator_ref(args.generator), "modes": rows,
                          "data": f"Lucchi training.tif slices 0-{args.slices - 1}", "threads": args.threads,
                          "native_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()), "machine": machine(),
                          **stamp(argv)})


if __name__ == "__main__":
    main()
