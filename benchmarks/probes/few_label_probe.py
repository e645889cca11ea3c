"""Probes behind few_label_gain.py's arm (b) (issue 16): one (k, seed), one synthetic set each.

Two hypotheses for why the adapted generator's pairs hurt, each tested on k = 1, seed 0 with the
benchmark's volume, split, labelled section, segmenter budget and evaluation (imported from
few_label_gain.py), against its recorded arms (a) 0.786 and (b) 0.675:

* ``grey``: the generated images' grey levels differ from the volume's (mean 152 vs 189, std 63 vs
  39). Map them onto the pool images' histogram (one pooled quantile map for the whole set), train.
* ``scale``: the shipped generator learnt 5 nm pixels, the volume has 10 nm. Adapt it on the pool
  upsampled 2x (bilinear; masks nearest), sample at 5 nm, average the pairs back down 2x (masks:
  majority), train.

    python benchmarks/probes/few_label_probe.py grey  --synth runs/few_label_gain/synth_k1
    python benchmarks/probes/few_label_probe.py scale --work runs/probe_scale      # ~15 min, 2 idle cores
    python benchmarks/probes/few_label_probe.py fidelity --synth runs/few_label_gain/synth_k1 \
        --model runs/few_label_gain/models/k1_s0_a     # the arm-(a) segmenter reads 24 generated tiles

Two more (2026-12-03, session 6), with ``--model`` mito-unet v3 (see few_label_gain.py for how to
extract it from git):

* ``acquire``: the shipped generator untouched at its 5 nm, layouts from the k masks, 512^2 tiles
  rendered to the volume's 10 nm by the acquisition model fitted on the pool images
  (``generate/acquire.py``), ``--pairs`` of them; ``raw``: the same tiles only averaged down 2x;
* ``ceiling``: every pool section labelled (11), no generated pairs: how much more labels can give.

    python benchmarks/probes/few_label_probe.py acquire --model /tmp/v3 --work runs/probe_acquire --pairs 100
    python benchmarks/probes/few_label_probe.py ceiling --model /tmp/v3 --work runs/probe_acquire

Prints the evaluation IoU and writes PROBE.json next to the synthetic set. A probe, not a result:
one seed, to decide what to build. Measured with mito-unet v3 (weights 9eae721251eb, trained on
0-139); v4 trained on every slice, so pass ``--model`` a model that never saw 140-164 (the script
refuses one that did), e.g. ``runs/cv/scratch8k_bf16/fold4/last``.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _provenance import check_unseen, model_ref, stamp, write_json  # noqa: E402
from few_label_gain import BLOCK, DATA, fit, labelled, split, thicken  # noqa: E402
from finetune_gain import PRESETS, degrade, iou_on  # noqa: E402


def volume(k, seed):
    lo, hi = BLOCK
    img = tifffile.imread(DATA / "training.tif")[lo:hi]
    gt = tifffile.imread(DATA / "training_groundtruth.tif")[lo:hi]
    vol, gt = degrade(*thicken(img, gt, 2), PRESETS["strong"], 0)
    sp = split(vol.shape[0], 2, 12, 10)
    zs = labelled(seed, k, sp["label_pool"])
    masks = np.zeros(vol[sp["pool"]].shape, np.uint8)
    masks[zs] = gt[sp["pool"]][zs]
    return vol, gt, sp, zs, masks


def grey_map(src, ref):
    hs = np.bincount(src.ravel(), minlength=256).cumsum() / src.size
    hr = np.bincount(ref.ravel(), minlength=256).cumsum() / ref.size
    return np.clip(np.round(np.interp(hs, hr, np.arange(256))), 0, 255).astype(np.uint8)


def acquired_pairs(args, pool, masks, zs):
    """The shipped generator, untouched, at its 5 nm; layouts fitted on the k masks (upsampled 2x);
    512^2 tiles rendered to the volume's 10 nm by the acquisition model fitted on the pool images
    (``acquire``) or only averaged down 2x (``raw``)."""
    from napari_cellgen.generate.acquire import apply_acquisition, fit_acquisition, resample
    from napari_cellgen.generate.layout import fit_layout, sample_layouts
    from napari_cellgen.generate.sample import sample_sync
    from napari_cellgen.generate.store import load_generator

    w = args.work
    w.mkdir(parents=True, exist_ok=True)
    cache = w / f"gen5nm_k{args.k}_s{args.seed}_n{args.pairs}.npz"
    if cache.exists():
        z = np.load(cache)
        g_img, g_mask = z["images"], z["masks"]
    else:
        up = np.repeat(np.repeat(masks, 2, 1), 2, 2)
        layout = fit_layout(up, slices=zs, seed=args.seed)
        lay = sample_layouts(layout, args.pairs, shape=(512, 512), seed=100 * args.k + args.seed)
        res = sample_sync(load_generator("mito-gen"), lay, seed=100 * args.k + args.seed, allow_empty=True)
        g_img, g_mask = res.images, lay
        np.savez_compressed(cache, images=g_img, masks=g_mask)
    if args.probe == "raw":
        im, m = resample(g_img, g_mask, 0.5)
        return np.clip(np.round(im), 0, 255).astype(np.uint8), m, w / "raw"
    params = fit_acquisition(g_img, pool, scale=0.5, seed=args.seed)
    print(json.dumps({k: v for k, v in params.items() if k != "tone"}))
    im, m = apply_acquisition(g_img, g_mask, params, seed=args.seed)
    (w / "acquire").mkdir(exist_ok=True)
    tifffile.imwrite(w / "acquire" / "images.tif", im)
    return im, m, w / "acquire"


def cellgen(*args):
    subprocess.run([sys.executable, "-m", "napari_cellgen", *map(str, args)], check=True)


def main():
    import torch
    from skimage.measure import label

    from napari_cellgen.models.store import resolve

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("probe", choices=["grey", "scale", "fidelity", "acquire", "raw", "ceiling"])
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--synth", type=Path, default=Path("runs/few_label_gain/synth_k1"))
    ap.add_argument("--work", type=Path, default=Path("runs/probe_scale"))
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="mito-unet")
    ap.add_argument("--minutes", type=float, default=8.0)
    args = ap.parse_args()
    if args.probe == "fidelity":
        from napari_cellgen.segment.pipeline import SegmentOptions, segment

        s_img, s_mask = tifffile.imread(args.synth / "images.tif")[:24], tifffile.imread(args.synth / "masks.tif")[:24]
        inter = union = 0
        for im, m in zip(s_img, s_mask > 0, strict=True):
            p = segment(im[None], SegmentOptions(model=args.model, device="cpu")).labels[0] > 0
            inter, union = inter + (p & m).sum(), union + (p | m).sum()
        rec = {"probe": "fidelity", "k": args.k, "seed": args.seed, "model": model_ref(args.model),
               "synth": str(args.synth), "tiles": len(s_img), "pooled_iou": float(inter / union)}
        record(rec)
        print(json.dumps(rec))
        return
    check_unseen(args.model, range(BLOCK[0], BLOCK[1]))
    vol, gt, sp, zs, masks = volume(args.k, args.seed)
    pool = vol[sp["pool"]]
    if args.probe == "grey":
        s_img, s_mask = tifffile.imread(args.synth / "images.tif"), tifffile.imread(args.synth / "masks.tif")
        s_img = grey_map(s_img, pool)[s_img]
        out = args.synth
    elif args.probe in ("acquire", "raw"):
        s_img, s_mask, out = acquired_pairs(args, pool, masks, zs)
    elif args.probe == "ceiling":  # every pool section labelled, no generated pairs: the most labels can give
        zs, masks = list(range(len(pool))), gt[sp["pool"]].astype(np.uint8)
        s_img = s_mask = None
        out = args.work / "ceiling"
    else:
        w = args.work
        w.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("CELLGEN_USER_DIR", str(w / "user"))
        up = torch.nn.functional.interpolate(torch.from_numpy(pool.astype(np.float32))[:, None], scale_factor=2,
                                             mode="bilinear", align_corners=False)[:, 0]
        tifffile.imwrite(w / "up_images.tif", up.round().clamp(0, 255).numpy().astype(np.uint8))
        tifffile.imwrite(w / "up_masks.tif", np.repeat(np.repeat(masks, 2, 1), 2, 2))
        cellgen("train-generator", "--images", w / "up_images.tif", "--masks", w / "up_masks.tif", "-o", w / "gen",
                "--slices", ",".join(map(str, zs)), "--val-slices", "none", "--generator", "mito-gen",
                "--minutes", args.minutes, "--seed", 100 * args.k, "--quiet")
        cellgen("synth", "-o", w / "synth", "--n", 200, "--generator", w / "gen", "--seed", 100 * args.k, "--quiet")
        im = tifffile.imread(w / "synth" / "images.tif").astype(np.float32)
        m = tifffile.imread(w / "synth" / "masks.tif") > 0
        n, h, wd = im.shape
        s_img = im.reshape(n, h // 2, 2, wd // 2, 2).mean((2, 4)).round().astype(np.uint8)
        s_mask = np.stack([label(x) for x in m.reshape(n, h // 2, 2, wd // 2, 2).mean((2, 4)) >= 0.5])
        out = w
    model, card, info = fit(str(resolve(args.model)), pool, masks, zs, out / f"model_{args.probe}", steps=300,
                            batch=8, patch=256, seed=args.seed, threads=os.cpu_count(),
                            synthetic=None if s_img is None else (s_img, s_mask.astype(np.uint16)), ratio=0.5)
    iou = iou_on(model, card, vol, gt, sp["eval"])["iou"]
    rec = {"probe": args.probe, "k": args.k, "seed": args.seed, "labelled": zs, "iou": iou,
           "model": model_ref(args.model), "pairs": None if s_img is None else int(len(s_img)),
           "synthetic_grey_mean_std": None if s_img is None else [float(s_img.mean()), float(s_img.std())],
           "pool_grey_mean_std": [float(pool.mean()), float(pool.std())], "train_s": info["train_s"]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "PROBE.json").write_text(json.dumps(rec, indent=2))
    record(rec)
    print(json.dumps(rec))


def record(rec: dict) -> None:
    """Keep every probe's result in benchmarks/results/few_label_probes.json (one entry per probe, k, seed, model)."""
    path = HERE.parent / "results" / "few_label_probes.json"
    rows = json.loads(path.read_text())["probes"] if path.exists() else []
    def key(r):
        return r["probe"], r["k"], r["seed"], r["model"]["weights_sha256"], r.get("synth"), r.get("pairs")

    rows = [r for r in rows if key(r) != key(rec)] + [
        {**rec, **stamp(sys.argv[1:])}]
    write_json(path, {"what": "probes behind few_label_gain.py arm (b): one (k, seed) each, to decide what to "
                              "build; not results", "probes": rows})


if __name__ == "__main__":
    main()
