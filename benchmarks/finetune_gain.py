"""Does fine-tuning on 2 annotated slices pay off on data the shipped model handles badly?

Data: the Lucchi validation block (slices 140-164, never used to train the shipped model),
degraded as if acquired on another microscope/protocol:

* resampled to 0.5x (pixel size 5 nm -> 10 nm: every structure is half as wide),
* Gaussian blur, sigma 1 px after resampling (a softer detector / thicker section),
* gamma 0.5 on the 0-1 grey range (dark membranes and matrix brightened, contrast flattened),
* additive Gaussian noise, sigma = 30 grey levels (0-255; a faster scan).

(``--degradation mild``: 0.6x, no blur, gamma 0.5, sigma 25; ``inverted``: "strong" with
inverted contrast, as from another detector.) The masks are resampled the same way
(area-weighted, >= 0.5). Protocol:

1. the shipped model (``--model``, default ``mito-unet``) predicts the degraded stack
   -> foreground IoU (threshold 0.5) on the 23 slices that are *not* annotated = before;
2. fine-tune it on the 2 annotated degraded slices (``--train-slices``, default 146 and 158)
   for ``--steps`` steps (a few minutes on a 2-core CPU), no validation split (the last
   weights are kept) -> IoU on the same 23 slices = after;
3. for reference: the shipped model on the undegraded 23 slices, and (``--scratch``) a
   U-Net trained from scratch on the same 2 slices for the same steps.

    python benchmarks/finetune_gain.py                 # ~6-8 min on 2 cores
    python benchmarks/finetune_gain.py --steps 5 --model runs/mito-unet   # smoke test

Writes ``benchmarks/results/finetune_gain.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from _provenance import check_unseen, model_ref, stamp, write_json  # run as a script: benchmarks/ is on sys.path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "lucchi"
BLOCK = (140, 165)
PRESETS = {
    "strong": {"resample": 0.5, "blur_sigma_px": 1.0, "gamma": 0.5, "noise_sigma_grey": 30.0,
               "invert": False},
    "mild": {"resample": 0.6, "blur_sigma_px": 0.0, "gamma": 0.5, "noise_sigma_grey": 25.0,
             "invert": False},
    "inverted": {"resample": 0.5, "blur_sigma_px": 1.0, "gamma": 0.5, "noise_sigma_grey": 30.0,
                 "invert": True},
}


def degrade(img: np.ndarray, mask: np.ndarray, d: dict, seed: int = 0):
    """Degradation ``d`` (a PRESETS entry) of a (Z, Y, X) uint8 stack and its mask."""
    import torch
    from torch.nn import functional as F

    from napari_cellgen.train.augment import blur

    f = d["resample"]
    size = (round(img.shape[1] * f), round(img.shape[2] * f))
    t = F.interpolate(torch.from_numpy(img.astype(np.float32) / 255.0)[:, None], size=size, mode="area")
    if d["blur_sigma_px"] > 0:
        t = blur(t, d["blur_sigma_px"])
    small = t[:, 0].numpy()
    m = F.interpolate(torch.from_numpy((mask > 0).astype(np.float32))[:, None], size=size, mode="area")
    m = (m[:, 0].numpy() >= 0.5).astype(np.uint8)
    rng = np.random.default_rng(seed)
    out = np.clip(small, 0, 1) ** d["gamma"]
    if d["invert"]:
        out = 1.0 - out
    out = out * 255.0 + rng.normal(0, d["noise_sigma_grey"], out.shape)
    return np.clip(np.round(out), 0, 255).astype(np.uint8), m


def iou_on(model, card, image, mask, zs):
    """Pooled foreground IoU and mean per-slice IoU over slices ``zs`` (whole stack as context)."""
    from napari_cellgen._progress import run
    from napari_cellgen.metrics import IoU
    from napari_cellgen.segment.predict import predict_stack

    model.eval()
    prob = run(predict_stack(model, card, image, batch_size=4))
    pooled = IoU()
    per = [pooled.add(prob[z] >= 0.5, mask[z]) for z in zs]
    return {"iou": pooled.value, "mean_slice_iou": float(np.mean(per))}


def finetune(init, image, mask, train_zs, steps, seed, out_dir, lr=None):
    from napari_cellgen._progress import run
    from napari_cellgen.models.store import load_model
    from napari_cellgen.train.loop import (
        TrainConfig,
        base_model_info,
        default_lr,
        patch_at_model_scale,
        train_model,
    )

    info = base_model_info(init)
    cfg = TrainConfig(init=init, steps=steps, batch=8, lr=lr or default_lr(init), val_fraction=0.0,
                      val_every=10**9, seed=seed,
                      patch=patch_at_model_scale(256, info["scale"], info["depth"]),
                      name=Path(out_dir).name)
    t0 = time.perf_counter()
    losses = []
    run(train_model([(image, mask, list(train_zs))], out_dir, cfg),
        lambda p: losses.append(p.info["loss"]) if p.info else None)
    dt = time.perf_counter() - t0
    model, card = load_model(out_dir)
    return model, card, {"time_s": dt, "steps": steps, "batch": cfg.batch, "lr": cfg.lr,
                         "patch_model_px": cfg.patch, "loss_first10": float(np.mean(losses[:10])),
                         "loss_last10": float(np.mean(losses[-10:]))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--model", default="mito-unet", help="the shipped model (name or folder)")
    ap.add_argument("--train-slices", default="146,158", help="the 2 annotated slices (Lucchi indices)")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--degradation", choices=sorted(PRESETS), default="strong")
    ap.add_argument("--scratch", action=argparse.BooleanOptionalAction, default=True,
                    help="also train from scratch on the same 2 slices (reference)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "finetune_gain.json")
    args = ap.parse_args(argv)

    import tifffile
    import torch

    from napari_cellgen.models.store import load_model, resolve

    lo, hi = BLOCK
    img = tifffile.imread(args.data / "training.tif")[lo:hi]
    gt = tifffile.imread(args.data / "training_groundtruth.tif")[lo:hi]
    train_zs = [int(z) - lo for z in args.train_slices.split(",")]
    test_zs = [z for z in range(hi - lo) if z not in train_zs]
    deg, deg_mask = degrade(img, gt, PRESETS[args.degradation], args.seed)
    check_unseen(args.model, range(lo, hi))
    model, card = load_model(args.model)
    model_dir = str(resolve(args.model))
    res = {"what": "IoU of the shipped model on degraded unseen EM before/after fine-tuning on 2 slices",
           "data": f"Lucchi training.tif slices {lo}-{hi - 1} (the shipped model's validation block)",
           "degradation": {"preset": args.degradation, **PRESETS[args.degradation]},
           "degraded_shape": list(deg.shape),
           "annotated_slices": [z + lo for z in train_zs], "test_slices": f"{lo}-{hi - 1} minus those 2 (23)",
           "model": model_ref(args.model), "threshold": 0.5}
    t0 = time.perf_counter()
    res["shipped_on_original"] = iou_on(model, card, img, gt, test_zs)
    res["before"] = iou_on(model, card, deg, deg_mask, test_zs)
    print("before", res["before"], "original", res["shipped_on_original"], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("CELLGEN_USER_DIR", str(Path(tmp) / "user"))
        m2, c2, fit = finetune(model_dir, deg, deg_mask, train_zs, args.steps, args.seed, Path(tmp) / "ft")
        res["finetune"] = fit
        res["after"] = iou_on(m2, c2, deg, deg_mask, test_zs)
        print("after", res["after"], fit, flush=True)
        if args.scratch:
            m3, c3, fit3 = finetune("scratch", deg, deg_mask, train_zs, args.steps, args.seed,
                                    Path(tmp) / "sc")
            res["scratch_same_budget"] = {**iou_on(m3, c3, deg, deg_mask, test_zs), **fit3}
            print("scratch", res["scratch_same_budget"], flush=True)
    res["gain_iou"] = res["after"]["iou"] - res["before"]["iou"]
    res["total_s"] = time.perf_counter() - t0
    res["machine"] = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                      "python": platform.python_version(), "torch": torch.__version__}
    res.update(stamp(argv))
    write_json(args.out, res)
    print(f"IoU before {res['before']['iou']:.3f} -> after {res['after']['iou']:.3f} "
          f"(+{res['gain_iou']:.3f}) in {fit['time_s']:.0f} s of fine-tuning -> {args.out}")


if __name__ == "__main__":
    main()
