"""``cellgen train``: train or fine-tune the segmenter on (image, mask) stacks.

    cellgen train --images IMG.tif --masks MASKS.tif --slices 0-9,40 --steps 2000 -o MODEL_DIR
    cellgen train ... --synthetic SYNTH_DIR --synthetic-ratio 0.5   # mix in `cellgen synth` pairs

MODEL_DIR then works as ``cellgen segment --model MODEL_DIR``; the model is also
registered in the user models folder under ``--name`` (default: MODEL_DIR's name),
so ``cellgen segment --model NAME`` and the Segment widget find it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train",
        help="train or fine-tune the mitochondria segmenter on image/mask stacks",
        description="Train (--init scratch) or fine-tune (--init default, a model name or folder) the "
        "U-Net on pixel-aligned image and mask stacks. Only annotated slices are used: those given with "
        "--slices, else every slice whose mask has any foreground (an unlabelled slice is not background). "
        "Mask values: 0 = background, any other integer (1, 255, instance ids) = mitochondrion.",
    )
    p.add_argument("--images", nargs="+", required=True, metavar="IMG", help="image TIFF stack(s)")
    p.add_argument("--masks", nargs="+", required=True, metavar="MASK",
                   help="mask/labels TIFF stack(s), one per --images, same shape")
    p.add_argument("-o", "--output", required=True, metavar="MODEL_DIR",
                   help="folder for the best model (model.safetensors + card.json) and last/ (resumable)")
    p.add_argument("--slices", default=None,
                   help="annotated slices, e.g. 0-9,40 (default: every slice with any foreground)")
    p.add_argument("--init", default="default",
                   help="default (the shipped model), scratch, a registered model name or a model folder")
    p.add_argument("--steps", type=int, default=2000, help="optimizer steps (default 2000)")
    p.add_argument("--patch", type=int, default=256, help="training patch side in input pixels (default 256)")
    p.add_argument("--batch", type=int, default=8, help="patches per step (default 8)")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default 2e-3 from scratch, 5e-4 when fine-tuning)")
    p.add_argument("--val-fraction", type=float, default=0.15,
                   help="fraction of the annotated slices (the last ones) held out for validation IoU")
    p.add_argument("--val-every", type=int, default=None, help="validate every N steps (default steps/20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from MODEL_DIR/last")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    p.add_argument("--name", default=None, help="register the model under this name (default: MODEL_DIR's)")
    p.add_argument("--no-register", action="store_true", help="do not copy it into the user models folder")
    p.add_argument("--synthetic", default=None, metavar="DIR",
                   help="mix in generated pairs from `cellgen synth -o DIR` (never used for validation)")
    p.add_argument("--synthetic-ratio", type=float, default=0.5, metavar="R",
                   help="share of each batch taken from --synthetic (default 0.5)")
    p.add_argument("--hard-examples", type=float, default=0.0, metavar="SHARE",
                   help="share of patches centred on what the model currently gets wrong, found again every "
                        "--mine-every steps (default 0: off; 0.3 taught the shipped model its look-alikes)")
    p.add_argument("--mine-every", type=int, default=1000, metavar="N",
                   help="steps between passes that find the hard examples (default 1000)")
    p.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="validate and keep a moving average of the weights (e.g. 0.999; default 0: off)")
    g = p.add_argument_group("architecture (--init scratch only)")
    g.add_argument("--base", type=int, default=16, help="features of the first level (default 16)")
    g.add_argument("--depth", type=int, default=4, help="number of poolings (default 4)")
    g.add_argument("--scale", type=float, default=0.5, help="model / input resolution (default 0.5)")
    g.add_argument("--context", type=int, default=1, help="neighbour slices per side as channels (default 1)")
    p.add_argument("--quiet", action="store_true", help="only the validation lines, no progress bar")
    from ..train.ddp import add_arguments

    add_arguments(p)  # --nproc N: torch DDP (train/ddp.py)
    return p


def _read(path: str):
    from ..io import read_stack

    src = Path(path)
    if not src.exists():
        raise FileNotFoundError(f"{src} does not exist")
    try:
        data, meta = read_stack(src)
    except (ValueError, OSError) as exc:
        raise ValueError(f"cannot read {src}: {exc}") from exc
    for w in (meta or {}).get("warnings", []) or []:
        print(f"cellgen train: {src.name}: {w}", file=sys.stderr)
    return data


def build_config(args):
    """A :class:`TrainConfig` from the parsed arguments (the patch converted to model pixels)."""
    from ..train.loop import TrainConfig, base_model_info, default_lr, patch_at_model_scale

    for name in ("steps", "batch", "patch"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1")
    if not 0.0 <= args.val_fraction < 1.0:
        raise ValueError("--val-fraction must be in [0, 1)")
    init = "scratch" if args.init == "scratch" else args.init
    cfg = TrainConfig(init=init, base=args.base, depth=args.depth, scale=args.scale, context=args.context)
    info = base_model_info(init, cfg)
    cfg.patch = patch_at_model_scale(args.patch, info["scale"], info["depth"])
    cfg.steps, cfg.batch, cfg.seed, cfg.threads = args.steps, args.batch, args.seed, args.threads
    cfg.lr = args.lr if args.lr is not None else default_lr(init)
    cfg.val_fraction = args.val_fraction
    cfg.hard_prob, cfg.mine_every = args.hard_examples, args.mine_every
    if not 0.0 <= args.ema < 1.0:
        raise ValueError(f"--ema must be in [0, 1), got {args.ema}")
    cfg.ema = args.ema
    cfg.val_every = args.val_every or max(1, args.steps // 20)
    cfg.name = args.name or Path(args.output).name
    if getattr(args, "synthetic", None):
        if not 0.0 <= args.synthetic_ratio <= 1.0:
            raise ValueError("--synthetic-ratio must be between 0 and 1")
        cfg.synthetic_ratio = args.synthetic_ratio
    cfg.notes = {"base_model": info["name"], "patch_input_px": args.patch,
                 "images": [str(p) for p in args.images], "masks": [str(p) for p in args.masks]}
    return cfg


def run(args) -> int:
    from .._progress import run as drive
    from .._progress import tqdm_callback
    from ..segment.predict import pick_device
    from ..train.data import parse_slices

    if len(args.images) != len(args.masks):
        raise ValueError(f"{len(args.images)} --images but {len(args.masks)} --masks: "
                         "give one mask per image")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder")
    if args.resume and not (out / "last" / "state.json").is_file():
        raise ValueError(f"nothing to resume: {out / 'last'} has no training state")
    cfg = build_config(args)
    device = pick_device(args.device)
    pairs = []
    for img_path, mask_path in zip(args.images, args.masks, strict=False):
        image, mask = _read(img_path), _read(mask_path)
        if tuple(image.shape) != tuple(mask.shape):
            raise ValueError(f"{img_path} has shape {tuple(image.shape)} but {mask_path} has "
                             f"{tuple(mask.shape)}: image and mask must be pixel-aligned stacks of one shape")
        n = 1 if image.ndim == 2 else image.shape[0]
        slices = parse_slices(args.slices, n) if args.slices else None
        pairs.append((image, mask, slices))

    synthetic = None
    if args.synthetic:
        from ..generate.synth import read_synthetic_set

        if getattr(args, "nproc", 1) > 1:
            raise ValueError("--synthetic is not supported with --nproc > 1 yet")
        images, masks, meta = read_synthetic_set(args.synthetic)
        synthetic = (images, masks)
        cfg.notes["synthetic_set"] = {"dir": str(args.synthetic), "generator": meta.get("generator"),
                                  "n": int(images.shape[0])}

    bar = None if args.quiet else tqdm_callback("train")
    t0 = time.perf_counter()
    best = {"iou": -1.0}

    def report(p):
        if bar is not None:
            bar(p)
        if p.info and "val_iou" in p.info:
            best["iou"] = max(best["iou"], p.info["val_iou"])
            line = (f"step {p.done}/{p.total}  loss {p.info['loss']:.4f}  val IoU {p.info['val_iou']:.4f}"
                    f"  (best {best['iou']:.4f})  {p.info['samples_per_s']:.1f} samples/s"
                    f"  {time.perf_counter() - t0:.0f} s")
            if bar is not None:
                from tqdm import tqdm

                tqdm.write(line, file=sys.stderr)
            else:
                print(line, file=sys.stderr, flush=True)

    register = None if args.no_register else cfg.name
    try:
        from ..train.ddp import train_job  # one process, or DDP with --nproc / under torchrun

        if synthetic is not None:
            from ..train.loop import train_model

            job = train_model(pairs, out, cfg, resume=args.resume, device=device, register_as=register,
                              synthetic=synthetic)
        else:
            job = train_job(pairs, out, cfg, nproc=args.nproc, resume=args.resume, device=device,
                            register_as=register)
        result = drive(job, report)
    except KeyboardInterrupt:
        if (out / "model.safetensors").is_file():
            print(f"cellgen train: interrupted; the best model so far is in {out} "
                  f"(continue with --resume)", file=sys.stderr)
        raise
    metrics = (result["card"] or {}).get("metrics", {})
    dt = time.perf_counter() - t0
    print(f"best validation IoU {metrics.get('val_iou', float('nan')):.4f} at step {metrics.get('step')} "
          f"({dt:.0f} s); model in {out}", file=sys.stderr)
    if result["registered"] is not None:
        print(f"registered as {result['registered'].name!r}: cellgen segment IMG -o OUT --model "
              f"{result['registered'].name}", file=sys.stderr)
    return 0
