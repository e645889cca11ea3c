"""Train the shipped default segmenter ("mito-unet") on the Lucchi training volume.

Slices 0-139 train, the last 25 (140-164) validate (a contiguous block, never
used for training). The best checkpoint by validation IoU is written to OUT;
``--final DIR`` also writes the last (EMA) weights, which no validation chose.
Either can be copied into ``src/napari_cellgen/_data/models/mito-unet``.

    python benchmarks/train_default.py --out runs/mito-unet --steps 5000          # v1 (val IoU 0.834)
    python benchmarks/train_default.py --out runs/seg2/mito-unet --init runs/mito-unet --steps 10000 \
        --lr 1e-3 --fg-prob 0.35 --hard 0.3 --mine-every 1000                     # v2: best at step 6000 (0.891)
    python benchmarks/train_default.py --out runs/c2/mito-unet --init runs/seg2/mito-unet --context 2 \
        --steps 3000 --lr 3e-4 --fg-prob 0.4 --hard 0.2 --mine-every 1000 --ema 0.998 --dice batch \
        --val-every 250 --final runs/v3                                            # v3 = runs/v3, the last EMA

v4 (issue 15's protocol: the recipe chosen by blocked CV, benchmarks/cv.py, trained on all 165 slices):

    python benchmarks/train_default.py --out runs/final8k/run --final runs/final8k/last --train-slices 0-164 \
        --val-slices none --tile 640 --steps 8000 --lr 2e-3 --fg-prob 0.4 --hard 0.2 --ema 0.998 --dice batch \
        --context 2 --precision bf16            # then benchmarks/ship_segmenter.py installs runs/final8k/last

Experiments (not shipped; histories in benchmarks/results/segmenter_training.json):

    ... --init mito-unet --steps 3000 --lr 3e-4 --fg-prob 0.4 --hard 0.2 --ema 0.998 --dice batch     # run 5
    ... --init mito-unet --scale 0.75 --tile 768 --steps 4000 --batch 8 --patch 192 --lr 5e-4 \
        --fg-prob 0.4 --hard 0.2 --ema 0.998 --dice batch                                         # run 6
    ... --init runs/v3 --context 3 (then as v3)                                                   # run 8
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

import tifffile
from _provenance import model_ref, stamp  # run as a script: benchmarks/ is on sys.path

from napari_cellgen._progress import run
from napari_cellgen.train.data import parse_slices
from napari_cellgen.train.loop import DICE_MODES, TRAIN_PRECISIONS, TrainConfig, train_segmenter

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "lucchi"


def load_lucchi(data: Path = DATA):
    """``(images, masks)``: the Lucchi training volume and its masks, (165, 768, 1024) uint8 each."""
    return tifffile.imread(Path(data) / "training.tif"), tifffile.imread(Path(data) / "training_groundtruth.tif")


def spans(zs) -> str:
    """``[0, 1, 2, 5, 6]`` -> ``"0-2,5-6"``."""
    out, zs = [], sorted(zs)
    for z in zs:
        if out and z == out[-1][1] + 1:
            out[-1][1] = z
        else:
            out.append([z, z])
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in out)


def device_name(device: str) -> str:
    """``cuda (NVIDIA H200)`` / ``cpu``: where a model was trained, for its card."""
    if device.startswith("cuda"):
        import torch

        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=Path("runs/mito-unet"))
    ap.add_argument("--steps", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--base", type=int, default=16)
    ap.add_argument("--val-every", type=int, default=500)
    ap.add_argument("--n-val", type=int, default=25)
    ap.add_argument("--n-train", type=int, default=None, help="use only the first N slices (smoke tests)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", default="scratch", help="scratch, or a model to continue from (e.g. mito-unet)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--fg-prob", type=float, default=0.5, help="share of patches centred on mitochondria")
    ap.add_argument("--hard", type=float, default=0.0,
                    help="share of patches centred on pixels the model gets wrong (hard examples)")
    ap.add_argument("--ema", type=float, default=0.0, help="validate/keep a moving average of the weights")
    ap.add_argument("--mine-every", type=int, default=1000, help="find the hard examples again every N steps")
    ap.add_argument("--dice", choices=DICE_MODES, default="sample",
                    help="soft Dice per patch or over the whole batch")
    ap.add_argument("--scale", type=float, default=None,
                    help="with --init: continue at this resolution scale instead of the parent's")
    ap.add_argument("--context", type=int, default=None,
                    help="neighbouring slices each side (from scratch: the network's; with --init: can only grow)")
    ap.add_argument("--tile", type=int, default=256, help="inference tile (model pixels) written to the card")
    ap.add_argument("--appearance", type=float, default=0.0,
                    help="appearance augmentation strength 0-1 (other microscopes' contrast, noise, blur, "
                         "resolution, section thickness: train/augment.py)")
    ap.add_argument("--train-slices", default=None,
                    help="slices to train on, e.g. 0-139 or 0-32,66-164 (default: all but the last --n-val)")
    ap.add_argument("--val-slices", default=None,
                    help="slices to validate on, e.g. 33-65, or 'none' (default: the last --n-val)")
    ap.add_argument("--precision", choices=TRAIN_PRECISIONS, default="fp32",
                    help="training arithmetic: bf16 autocast is about 2x faster on CPUs with native bfloat16")
    ap.add_argument("--device", default="cpu", help="torch device of the training steps (cpu, cuda)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (patch sampling and augmentation)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--final", type=Path, default=None,
                    help="also write the last (EMA) weights, chosen by no validation, as a model folder here")
    args = ap.parse_args(argv)

    img, gt = load_lucchi(args.data)
    n = img.shape[0]
    val = list(range(n - args.n_val, n))
    train = list(range(0, args.n_train or (n - args.n_val)))
    if args.train_slices:
        train = parse_slices(args.train_slices, n)
    if args.val_slices:
        val = [] if args.val_slices == "none" else parse_slices(args.val_slices, n)
    if set(train) & set(val):
        raise SystemExit("train and validation slices overlap")
    scratch = args.init in ("scratch", "", None)
    cfg = TrainConfig(
        steps=args.steps, batch=args.batch, patch=args.patch, base=args.base, val_every=args.val_every,
        seed=args.seed, name="mito-unet", lr=args.lr, init=args.init, fg_prob=args.fg_prob, hard_prob=args.hard,
        mine_every=args.mine_every, ema=args.ema, dice=args.dice,
        rescale=args.scale, tile=args.tile, appearance=args.appearance, precision=args.precision,
        # --context: the network's own from scratch; from --init, its parent's widened to it
        context=(args.context or 1) if scratch else 1, recontext=None if scratch else args.context,
        val_fraction=0.0, select="last" if not val else "auto", threads=args.threads,
        pixel_size_nm=(5.0, 5.0, 5.0),  # Lucchi's voxels (the data README); a card gets it when from scratch
        notes={"data": "EPFL/Lucchi training volume", "train_slices_list": spans(train),
               "val_slices_list": spans(val) or "none", "device": device_name(args.device)},
    )
    def _stop(*_):  # SIGTERM (kill): stop like Ctrl-C, so the run's last/ checkpoint is written for --resume
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    t0 = time.time()
    log = open(args.out.with_suffix(".log"), "a") if args.out.parent.exists() else sys.stdout  # noqa: SIM115

    print(json.dumps({"start": True, **stamp(argv)}), file=log, flush=True)

    def cb(p):
        if p.stage != "train":
            print(json.dumps({"step": p.done, "t": round(time.time() - t0, 1), "stage": p.stage}), file=log, flush=True)
        elif p.info and ("val_iou" in p.info or p.done % 100 == 0):
            print(json.dumps({"step": p.done, "t": round(time.time() - t0, 1), **p.info}), file=log, flush=True)

    card = run(train_segmenter([(img, gt, train)], args.out, cfg, val_pairs=[(img, gt, val)] if val else None,
                               resume=args.resume, device=args.device), cb)
    print(json.dumps({"done": True, "time_s": time.time() - t0, "metrics": card.get("metrics"),
                      "model": model_ref(args.out)}), file=log, flush=True)
    if args.final:
        from napari_cellgen.train.checkpoint import export_last

        final = export_last(args.out, args.final)
        print(json.dumps({"final": str(final), "model": model_ref(final)}), file=log, flush=True)


if __name__ == "__main__":
    main()
