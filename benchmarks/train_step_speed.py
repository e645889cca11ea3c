"""Seconds per segmenter training step on this machine: the layout and arithmetic of the training loop.

Compares, on the same network and random batches (the shipped recipe's shape: base 16, depth 4,
5 slices of context, batch 12 x 128 x 128 at model resolution, batch Dice):

- ``fp32, contiguous``: how the loop trained before 2026-12-03;
- ``fp32, channels-last``: the loop now, on a CPU (the same arithmetic, oneDNN's fast path);
- ``bf16, channels-last``: ``--precision bf16`` (bfloat16 autocast; weights and loss stay float32).

Only the optimisation step is timed (forward, loss, backward, AdamW); sampling and augmentation
take about 13 ms per batch here. Median of ``--repeats`` steps after ``--warmup`` steps.

    python benchmarks/train_step_speed.py --repeats 20      # -> results/train_step_speed.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _provenance import machine, stamp, write_json  # noqa: E402

MODES = (("fp32, contiguous", "fp32", False), ("fp32, channels-last", "fp32", True),
         ("bf16, channels-last", "bf16", True))


def one_step(torch, model, opt, x, y, precision: str) -> float:
    """Seconds of one optimisation step as the training loop does it."""
    from napari_cellgen.train.loop import _logits, _loss

    t0 = time.perf_counter()
    loss = _loss(_logits(torch, model, x, "cpu", precision), y, "batch")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--patch", type=int, default=128, help="model pixels")
    ap.add_argument("--context", type=int, default=2)
    ap.add_argument("--base", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "train_step_speed.json")
    args = ap.parse_args(argv)

    import torch

    from napari_cellgen.models.unet import UNet
    from napari_cellgen.train.loop import _fast_layout

    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 2 * args.context + 1, args.patch, args.patch, generator=gen)
    y = (torch.rand(args.batch, 1, args.patch, args.patch, generator=gen) > 0.7).float()
    rows = {}
    for label, precision, fast in MODES:
        torch.manual_seed(0)
        model = UNet(in_channels=2 * args.context + 1, base=args.base, depth=4).train()
        xx = x
        if fast:
            _fast_layout(torch, model, "cpu")
            xx = _fast_layout(torch, x, "cpu")
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        for _ in range(args.warmup):
            one_step(torch, model, opt, xx, y, precision)
        times = [one_step(torch, model, opt, xx, y, precision) for _ in range(args.repeats)]
        rows[label] = {"precision": precision, "channels_last": fast, "median_s_per_step": statistics.median(times),
                       "min_s": min(times), "max_s": max(times)}
        print(label, round(rows[label]["median_s_per_step"], 3), flush=True)
    ref = rows["fp32, contiguous"]["median_s_per_step"]
    for r in rows.values():
        r["speedup_vs_fp32_contiguous"] = ref / r["median_s_per_step"]
    bf16_native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    write_json(args.out, {"what": "seconds per segmenter training step: layout and arithmetic", "modes": rows,
                          "shape": {"batch": args.batch, "patch_model_px": args.patch, "context": args.context,
                                    "base": args.base, "depth": 4},
                          "threads": args.threads, "native_bf16": bf16_native, "machine": machine(),
                          **stamp(argv)})


if __name__ == "__main__":
    main()
