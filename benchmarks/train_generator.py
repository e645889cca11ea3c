"""Train the shipped generator ("mito-gen") on the Lucchi training volume within a CPU budget.

Slices 0-139 train (images and masks); 140-164 are held out (their images pick the denoiser
checkpoint by unconditional validation loss; their masks are never read here, so the fidelity
benchmark on them stays clean). Wall-clock budgets per stage bound the run; the learning rates
follow whichever runs out first, steps or time.

    python benchmarks/train_generator.py --out runs/gen --vae-minutes 22 --diffusion-minutes 26

Then ``python benchmarks/generator_quality.py --generator runs/gen`` and, if it is good, copy
runs/gen (vae/, denoiser/, layout.json) to src/napari_cellgen/_data/generators/mito-gen.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import tifffile
from _provenance import generator_ref, stamp, write_json  # run as a script: benchmarks/ is on sys.path

from napari_cellgen._progress import run
from napari_cellgen.generate.train import GeneratorConfig, train_generator
from napari_cellgen.train.data import parse_slices

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "lucchi"


def _ints(text):
    return tuple(int(v) for v in text.split(","))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "gen")
    ap.add_argument("--n-val", type=int, default=25)
    ap.add_argument("--n-train", type=int, default=None, help="only the first N slices (smoke runs)")
    ap.add_argument("--vae-steps", type=int, default=100000)
    ap.add_argument("--vae-minutes", type=float, default=22.0)
    ap.add_argument("--vae-batch", type=int, default=8)
    ap.add_argument("--vae-patch", type=int, default=128)
    ap.add_argument("--vae-channels", type=_ints, default=(32, 64, 128))
    ap.add_argument("--adv-weight", type=float, default=0.0)
    ap.add_argument("--latent-variants", type=int, default=2)
    ap.add_argument("--diffusion-steps", type=int, default=100000)
    ap.add_argument("--diffusion-minutes", type=float, default=26.0)
    ap.add_argument("--diffusion-batch", type=int, default=8, help="batch of full 32x32-latent crops")
    ap.add_argument(
        "--small-crop-p",
        type=float,
        default=0.75,
        help="fraction of steps on 16x16-latent crops with 4x the batch",
    )
    ap.add_argument("--unet-channels", type=_ints, default=(64, 128, 128))
    ap.add_argument("--layers-per-block", type=int, default=1)
    ap.add_argument("--diffusion-lr", type=float, default=5e-4)
    ap.add_argument("--val-every", type=int, default=250)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--adv-start", type=float, default=0.5, help="fraction of the VAE run before the adversarial loss")
    ap.add_argument("--vae-lr", type=float, default=1e-3)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (a lent GPU machine: benchmarks/device_generator.sh)")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--train-slices", default=None, help="slices of the file that train, e.g. 0-57 (default: all "
                    "but the last --n-val)")
    ap.add_argument("--val-slices", default=None, help="held-out slices of the file (default: the last --n-val)")
    ap.add_argument("--name", default="mito-gen")
    ap.add_argument("--init", default=None, help="start from this generator (folder or name); with --vae-steps 0 "
                    "its VAE is kept and only the denoiser is fine-tuned")
    ap.add_argument("--offset-noise", type=float, default=0.0, help="std of the per-channel constant added to the "
                    "denoiser's training noise (and to the sampler's initial noise)")
    ap.add_argument("--snr-weight-floor", type=float, default=0.0, help="least loss weight of any noise level")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "generator_train.json")
    args = ap.parse_args(argv)

    images = tifffile.imread(args.data / "training.tif")
    masks = tifffile.imread(args.data / "training_groundtruth.tif")
    n = images.shape[0]
    val = parse_slices(args.val_slices, n) if args.val_slices else list(range(n - args.n_val, n))
    train = (parse_slices(args.train_slices, n) if args.train_slices
             else list(range(0, args.n_train or (n - args.n_val))))
    # a subset packed by device_data.py pack-subset names the Lucchi slice of each page
    origin = json.loads((args.data / "slices.json").read_text()) if (args.data / "slices.json").is_file() else None
    lucchi = (lambda zs: [origin["slices"][z] for z in zs]) if origin else (lambda zs: zs)
    cfg = GeneratorConfig(
        vae_steps=args.vae_steps,
        vae_minutes=args.vae_minutes,
        vae_batch=args.vae_batch,
        vae_patch=args.vae_patch,
        vae_channels=args.vae_channels,
        adv_weight=args.adv_weight,
        adv_start=args.adv_start,
        vae_lr=args.vae_lr,
        precision=args.precision,
        latent_variants=args.latent_variants,
        diffusion_steps=args.diffusion_steps,
        diffusion_minutes=args.diffusion_minutes,
        diffusion_batch=args.diffusion_batch,
        small_crop_p=args.small_crop_p,
        block_out_channels=args.unet_channels,
        layers_per_block=args.layers_per_block,
        diffusion_lr=args.diffusion_lr,
        offset_noise=args.offset_noise,
        snr_weight_floor=args.snr_weight_floor,
        val_every=args.val_every,
        threads=args.threads,
        seed=args.seed,
        name=args.name,
        notes={
            "data": "EPFL/Lucchi training volume" + (" (a subset of its slices: lucchi_slices)" if origin else ""),
            "train_slices_list": f"{train[0]}-{train[-1]}",
            "val_slices_list": f"{val[0]}-{val[-1]}",
            **({"lucchi_slices": {"train": lucchi(train), "val": lucchi(val)}} if origin else {}),
            "device": args.device,
            "command": " ".join(sys.argv),
        },
    )
    t0 = time.time()
    stage_t = {}

    def cb(p):
        stage_t.setdefault(p.stage, time.time())
        vals = p.info and any(k.startswith("val_") for k in p.info)
        if (
            vals
            or (p.info and p.done % 50 == 0)
            or p.stage in ("prepare",)
            or (p.stage == "encode" and p.done % 40 == 0)
        ):
            rec = {"stage": p.stage, "step": p.done, "total": p.total, "t": round(time.time() - t0, 1)}
            rec.update({k: (round(v, 5) if isinstance(v, float) else v) for k, v in (p.info or {}).items()})
            print(json.dumps(rec), flush=True)

    res = run(
        train_generator(
            images, masks, args.out, cfg, slices=train, val_slices=val, image_slices=train, val_masks=False,
            device=args.device, init=args.init,
        ),
        cb,
    )
    total = time.time() - t0
    stage_t = {k: round(v - t0, 1) for k, v in stage_t.items()}
    summary = {
        "generator": {**generator_ref(args.out), "path": str(args.out)},
        "total_time_s": round(total, 1),
        "stage_start_s": stage_t,
        "threads": args.threads,
        "vae": {
            "metrics": res["vae"].get("metrics"),
            "steps": res["vae"].get("training", {}).get("steps"),
            "architecture": res["vae"]["architecture"],
        },
        "denoiser": {
            "metrics": res["denoiser"].get("metrics"),
            "steps": res["denoiser"]["training"]["steps"],
            "architecture": res["denoiser"]["architecture"],
        },
        "layout": {k: v for k, v in res["layout"].items() if k != "objects"},
        "config": res["denoiser"]["training"]["config"],
    }
    summary.update(stamp(argv))
    write_json(args.results, summary, default=str)
    print(json.dumps({"done": True, "time_s": round(total, 1)}), flush=True)


if __name__ == "__main__":
    main()
