"""``cellgen train``: train or fine-tune the segmenter on (image, mask) stacks.

    cellgen train --images IMG.tif --masks MASKS.tif --slices 0-9,40 --steps 2000 -o MODEL_DIR
    cellgen train ... --synthetic SYNTH_DIR --synthetic-ratio 0.5   # mix in `cellgen synth` pairs

MODEL_DIR then works as ``cellgen segment --model MODEL_DIR``; the model is also
registered in the user models folder under ``--name`` (default: MODEL_DIR's name),
so ``cellgen segment --model NAME`` and the Segment widget find it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
    from ..cli import old_spelling
    from ..train.loop import TRAIN_PRECISIONS

    p = sub.add_parser(
        "train",
        help="train or fine-tune the mitochondria segmenter on image/mask stacks",
        description="Train (--model scratch) or fine-tune (--model default, a model name or folder) the "
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
    p.add_argument("--model", default="default",
                   help="the model to start from: default (the shipped model), scratch (a new U-Net, see "
                   "'architecture'), a registered model name or a model folder")
    old_spelling(p, "--init", dest="model")
    p.add_argument("--steps", type=int, default=2000, help="optimizer steps (--corrections: 400 is the dock's)")
    p.add_argument("--patch", type=int, default=256, metavar="PX",
                   help="training patch side in input pixels, like segment's --tile")
    p.add_argument("--batch", type=int, default=8, help="patches per step")
    old_spelling(p, "--batch-size", dest="batch", type=int)
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default 2e-3 from scratch, 5e-4 when fine-tuning)")
    p.add_argument("--val-fraction", type=float, default=0.15,
                   help="fraction of the annotated slices (the last ones) held out for validation IoU")
    p.add_argument("--val-every", type=int, default=None, help="validate every N steps (default: steps/20)")
    p.add_argument("--seed", type=int, default=0, help="random seed (patches, augmentation, initial weights)")
    p.add_argument("--resume", action="store_true", help="continue from MODEL_DIR/last")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    p.add_argument("--precision", choices=TRAIN_PRECISIONS, default="fp32",
                   help="training arithmetic: bf16 (bfloat16 autocast) is about 2x faster on CPUs with native "
                        "bfloat16 (AVX512-BF16, AMX) and slower on others (default fp32)")
    p.add_argument("--name", default=None, help="register the model under this name (default: MODEL_DIR's)")
    p.add_argument("--no-register", action="store_true", help="do not copy it into the user models folder")
    p.add_argument("--synthetic", default=None, metavar="DIR",
                   help="mix in generated pairs from `cellgen synth -o DIR` (never used for validation; "
                   "default: none)")
    p.add_argument("--synthetic-ratio", type=float, default=0.5, metavar="R",
                   help="share of each batch taken from --synthetic")
    p.add_argument("--hard-examples", type=float, default=0.0, metavar="SHARE",
                   help="share of patches centred on what the model currently gets wrong, found again every "
                        "--mine-every steps (default 0: off; 0.3 taught the shipped model its look-alikes)")
    p.add_argument("--mine-every", type=int, default=1000, metavar="N",
                   help="steps between passes that find the hard examples")
    p.add_argument("--corrections", action="store_true",
                   help="the Train dock's 'Fine-tune on my corrections' recipe: --slices are the slices you "
                   "corrected (all of them trained on, no validation, the last weights kept, the pixels the "
                   "starting model gets wrong weighted more; other labelled slices anchor the model when it "
                   "already agreed with your corrections); --steps/--batch/--patch/--lr as given")
    p.add_argument("--appearance", type=float, default=0.0, metavar="S",
                   help="strength (0-1) of strong appearance augmentation so the model transfers to other "
                   "labs' EM (other microscopes, ssTEM): contrast, gamma, inversion, noise, blur, pixel size, "
                   "section thickness, uneven illumination, stripes (default 0: off; 1: full)")
    p.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="validate and keep a moving average of the weights (e.g. 0.999; default 0: off)")
    g = p.add_argument_group("architecture (--model scratch only)")
    g.add_argument("--base", type=int, default=16, help="features of the first level")
    g.add_argument("--depth", type=int, default=4, help="number of poolings")
    g.add_argument("--scale", type=float, default=0.5, help="model / input resolution")
    g.add_argument("--context", type=int, default=1, help="neighbour slices per side as channels")
    p.add_argument("--quiet", action="store_true", help="only the validation lines, no progress bar")
    from ..train.ddp import add_arguments

    add_arguments(p)  # --nproc N: torch DDP (train/ddp.py)
    return p


def _read(path: str, opt: str):
    """``(data, meta)`` of an input stack, with the command's one-line errors."""
    from .._paths import read_input

    return read_input(path, "train", opt)


def build_config(args):
    """A :class:`TrainConfig` from the parsed arguments (the patch converted to model pixels), validated."""
    from .._checks import number
    from ..train.loop import TrainConfig, base_model_info, default_lr, patch_at_model_scale

    init = "scratch" if args.model == "scratch" else args.model
    cfg = TrainConfig(
        init=init, base=args.base, depth=args.depth, scale=args.scale, context=args.context, steps=args.steps,
        batch=args.batch, seed=args.seed, threads=args.threads, val_fraction=args.val_fraction,
        hard_prob=args.hard_examples, mine_every=args.mine_every, ema=args.ema, appearance=args.appearance,
        lr=args.lr if args.lr is not None else default_lr(init),
        val_every=args.val_every if args.val_every is not None else max(1, args.steps // 20),
        synthetic_ratio=args.synthetic_ratio if getattr(args, "synthetic", None) else 0.0,
        precision=getattr(args, "precision", "fp32"),
    )
    number(args.patch, "--patch", lo=1, hi=1 << 16, integer=True)
    number(args.synthetic_ratio, "--synthetic-ratio", lo=0, hi=1)
    number(getattr(args, "nproc", 1), "--nproc", lo=1, hi=1024, integer=True)
    cfg.validate()  # before the --model card is read: a NaN scale never reaches the patch arithmetic
    if getattr(args, "corrections", False):
        from ..train.loop import corrections_config

        if init == "scratch":
            raise ValueError("--corrections fine-tunes a model: give --model NAME (not scratch)")
        if not args.slices:
            raise ValueError("--corrections needs --slices: the slices you corrected, e.g. --slices 3,17")
        cfg = corrections_config(init, "", steps=args.steps, batch=args.batch, patch_px=args.patch, lr=args.lr,
                                 seed=args.seed)
        cfg.threads, cfg.appearance = args.threads, args.appearance
        cfg.precision = getattr(args, "precision", "fp32")
        cfg.name = args.name or Path(args.output).name
        cfg.notes.update({"patch_input_px": args.patch, "images": [str(p) for p in args.images],
                          "masks": [str(p) for p in args.masks]})
        return cfg.validate()
    info = base_model_info(init, cfg)
    cfg.patch = patch_at_model_scale(args.patch, info["scale"], info["depth"])
    cfg.name = args.name or Path(args.output).name
    cfg.notes = {"base_model": info["name"], "patch_input_px": args.patch,
                 "images": [str(p) for p in args.images], "masks": [str(p) for p in args.masks]}
    return cfg.validate()


def _summary(card: dict | None, out: Path) -> str:
    """The closing line: the kept model's validation IoU and step, or why there is none."""
    metrics = (card or {}).get("metrics") or {}
    if not metrics and (out / "card.json").is_file():  # e.g. --resume of a finished run: nothing new
        try:
            metrics = json.loads((out / "card.json").read_text()).get("metrics") or {}
        except (OSError, ValueError):
            metrics = {}
    iou, step = metrics.get("val_iou"), metrics.get("step")
    at = f" at step {step}" if step is not None else ""
    if isinstance(iou, (int, float)) and math.isfinite(iou):
        return f"validation IoU {iou:.4f}{at}"
    return f"no validation IoU (no validation slices){at}"


def run(args) -> int:
    from .._paths import check_input, check_outputs
    from .._progress import run as drive
    from .._progress import tqdm_callback
    from ..io.stack import stored_pixel_size, volume_pixel_size
    from ..models.store import check_register_name, looks_like_path
    from ..segment.predict import pick_device
    from ..train.checkpoint import check_training_state
    from ..train.data import parse_slices

    # options, --model card, registration name, inputs and outputs: all checked before any work
    if len(args.images) != len(args.masks):
        raise ValueError(f"{len(args.images)} --images but {len(args.masks)} --masks: "
                         "give one mask per image")
    out = Path(args.output)
    cfg = build_config(args)
    device = pick_device(args.device)
    if not args.no_register:
        check_register_name(cfg.name)
    inputs = [("--images", check_input("--images", p)) for p in args.images]
    inputs += [("--masks", check_input("--masks", p)) for p in args.masks]
    if args.synthetic:
        if getattr(args, "nproc", 1) > 1:
            raise ValueError("--synthetic is not supported with --nproc > 1 yet")
        inputs.append(("--synthetic", check_input("--synthetic", args.synthetic)))
    if looks_like_path(args.model):
        inputs.append(("--model", args.model))
    check_outputs(inputs, [("-o", out, "dir", ("model.safetensors", "card.json", "last"))])
    if args.resume:
        check_training_state(out / "last")  # complete, one step, checksums match
    pairs = []
    for k, (img_path, mask_path) in enumerate(zip(args.images, args.masks, strict=False)):
        (image, meta), (mask, _) = _read(img_path, "--images"), _read(mask_path, "--masks")
        if k == 0:  # the first stack's voxel size, for a model trained from scratch (train.loop._init_model)
            cfg.pixel_size_nm = volume_pixel_size(stored_pixel_size(meta))
        if tuple(image.shape) != tuple(mask.shape):
            raise ValueError(f"{img_path} has shape {tuple(image.shape)} but {mask_path} has "
                             f"{tuple(mask.shape)}: image and mask must be pixel-aligned stacks of one shape")
        n = 1 if image.ndim == 2 else image.shape[0]
        slices = parse_slices(args.slices, n) if args.slices else None
        pairs.append((image, mask, slices))
    anchors = None
    if getattr(args, "corrections", False):
        if len(pairs) != 1:
            raise ValueError("--corrections takes one --images stack and its --masks")
        from ..train.loop import correction_data

        pairs, anchors = correction_data(*pairs[0])

    synthetic = None
    if args.synthetic:
        from ..generate.synth import read_synthetic_set

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
    out.mkdir(exist_ok=True)
    job = None
    try:
        from ..train.ddp import train_job  # one process, or DDP with --nproc / under torchrun

        job = train_job(pairs, out, cfg, nproc=args.nproc, resume=args.resume, device=device,
                        register_as=register, synthetic=synthetic, anchors=anchors)
        result = drive(job, report)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM
        if job is not None:
            job.close()  # now, not at garbage collection: the best model and last/ are written first
        if (out / "model.safetensors").is_file():
            print(f"cellgen train: interrupted; the best model so far is in {out} "
                  f"(continue with --resume)", file=sys.stderr)
        raise
    dt = time.perf_counter() - t0
    print(f"{_summary(result['card'], out)} ({dt:.0f} s); model in {out}", file=sys.stderr)
    if result["registered"] is not None:
        print(f"registered as {result['registered'].name!r}: cellgen segment IMG -o OUT --model "
              f"{result['registered'].name}", file=sys.stderr)
    return 0
