"""Measure a generator against held-out Lucchi slices (140-164): fidelity, realism, VAE, speed.

    python benchmarks/generator_quality.py --generator runs/gen [--segmenter mito-unet] [--n 64]

- fidelity: images generated from the masks of held-out 256x256 tiles, segmented by the shipped
  segmenter (each tile on its own, 2D), IoU vs the conditioning masks; the same for the real tiles
  (the ceiling) and for new pairs (generated layouts);
- realism (real tiles as they are in the file; before 2026-12-04 each slice stretched 1-99 % to 0-255;
  ``benchmarks/realism.py`` is the measure with controls): (a) classifier two-sample test: a small CNN
  trained on half of the real/generated tiles,
  accuracy on the other half (0.5 = indistinguishable), with a real-vs-real control; (b) Frechet
  distance of the segmenter encoder's pooled deepest features, generated vs real held-out, beside
  real held-out vs real training tiles; (c) object statistics of generated layouts vs real tiles;
- VAE: PSNR/SSIM of reconstructions of held-out tiles, and IoU between the segmentations of the
  reconstructions and of the originals;
- speed: seconds per 256x256 sample end to end.

Writes benchmarks/results/generator_quality.json and a figure grid (real | generated, outlines).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import tifffile
from _provenance import generator_ref, model_ref, stamp, write_json  # run as a script: benchmarks/ is on sys.path

from napari_cellgen._progress import run
from napari_cellgen.metrics import IoU

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "lucchi"


def held_out_tiles(images, masks, zs, n, tile, seed, need_fg=True):
    """n random tiles (normalised real uint8, masks, raw uint8) from slices zs."""
    from napari_cellgen.generate.train import prepare_slice

    rng = np.random.default_rng(seed)
    h, w = images.shape[-2:]
    norm = {}
    reals, ms, raws = [], [], []
    tries = 0
    while len(reals) < n and tries < 100 * n:
        tries += 1
        z = int(rng.choice(zs))
        y, x = int(rng.integers(0, h - tile + 1)), int(rng.integers(0, w - tile + 1))
        m = masks[z, y : y + tile, x : x + tile] != 0
        if need_fg and m.mean() < 0.01:
            continue
        if z not in norm:
            norm[z] = prepare_slice(images[z])
        reals.append(np.round((norm[z][y : y + tile, x : x + tile] + 1) * 127.5).astype(np.uint8))
        ms.append(m.astype(np.uint8))
        raws.append(images[z, y : y + tile, x : x + tile])
    return np.stack(reals), np.stack(ms), np.stack(raws)


def segment_tiles(model, card, tiles):
    """Probability maps of independent 2D tiles (each tile its own context)."""
    from napari_cellgen.segment.predict import predict_stack

    return np.stack([run(predict_stack(model, card, t)) for t in tiles])


def iou(pred, gt):
    """Foreground IoU of a stack of tiles: mean and spread of the tiles' own, and pooled."""
    pooled = IoU()
    per = np.array([pooled.add(p, g) for p, g in zip(pred, gt, strict=True)])
    return {"mean": float(per.mean()), "pooled": pooled.value, "std": float(per.std())}


def encoder_features(model, card, tiles):
    """Global-average-pooled deepest encoder features of the segmenter for uint8 tiles."""
    import torch

    from napari_cellgen.segment.preprocess import normalize, resize

    k = int(card.get("context", 0))
    scale = float(card.get("scale", 1.0))
    feats = []
    with torch.inference_mode():
        for t in tiles:
            img = normalize(t, 1.0, 99.0)
            img = resize(img, (round(t.shape[0] * scale), round(t.shape[1] * scale)), "area")
            x = torch.from_numpy(np.repeat(img[None], 2 * k + 1, 0))[None]
            f = model.encode(x)
            feats.append(torch.cat([f[-1].mean((2, 3)), f[-2].mean((2, 3))], 1)[0].numpy())
    return np.stack(feats).astype(np.float64)


def frechet(a, b):
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def c2st(a, b, seed=0, steps=400):
    """Accuracy of a small CNN telling tiles of ``a`` from ``b`` on the half it did not train on."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n = min(len(a), len(b))
    ia, ib = rng.permutation(len(a))[:n], rng.permutation(len(b))[:n]
    half = n // 2

    def prep(t):
        x = torch.from_numpy(t.astype(np.float32) / 127.5 - 1)[:, None]
        return F.avg_pool2d(x, 2)  # 128x128: the scale the segmenter sees

    xa, xb = prep(a[ia]), prep(b[ib])
    xtr = torch.cat([xa[:half], xb[:half]])
    ytr = torch.cat([torch.zeros(half), torch.ones(half)])
    xte = torch.cat([xa[half:], xb[half:]])
    yte = torch.cat([torch.zeros(n - half), torch.ones(n - half)])
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, 2, 1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, 2, 1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, 2, 1),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, 2, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 1),
    )
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(xtr), 32))
        x = xtr[idx]
        if rng.random() < 0.5:
            x = x.flip(-1)
        if rng.random() < 0.5:
            x = x.flip(-2)
        loss = F.binary_cross_entropy_with_logits(net(x)[:, 0], ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.inference_mode():
        acc = float(((net(xte)[:, 0] > 0).float() == yte).float().mean())
        tr_acc = float(((net(xtr)[:, 0] > 0).float() == ytr).float().mean())
    return {"test_accuracy": acc, "train_accuracy": tr_acc, "n_train": 2 * half, "n_test": 2 * (n - half)}


def outline(mask):
    from scipy import ndimage as ndi

    m = mask.astype(bool)
    return m & ~ndi.binary_erosion(m, iterations=2)


def figure(path, reals, gens, masks, k=6):
    import imageio.v3 as iio

    rows = []
    for i in range(min(k, len(reals))):
        cells = []
        for img in (reals[i], gens[i]):
            rgb = np.repeat(img[..., None], 3, -1).copy()
            rgb[outline(masks[i])] = (255, 60, 60)
            cells.append(rgb)
            cells.append(np.full((img.shape[0], 4, 3), 255, np.uint8))
        rows.append(np.concatenate(cells[:-1], 1))
        rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
    iio.imwrite(path, np.concatenate(rows[:-1], 0))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default=None, help="generator folder or name (default: shipped)")
    ap.add_argument("--segmenter", default="mito-unet", help="segmenter name or folder")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--n-val", type=int, default=25)
    ap.add_argument("--n", type=int, default=64, help="held-out tiles (and generated images)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--sampler", default="dpm++")
    ap.add_argument("--pixel-noise", default="auto", help="pixel noise std, or 'auto' (the VAE card's noise_std)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "generator_quality.json")
    args = ap.parse_args(argv)

    import torch

    from napari_cellgen.generate.layout import object_stats
    from napari_cellgen.generate.sample import decode_latents, sample_sync, to_uint8
    from napari_cellgen.generate.store import load_generator
    from napari_cellgen.generate.train import vae_metrics
    from napari_cellgen.models.store import load_model

    torch.set_num_threads(args.threads)
    images = tifffile.imread(args.data / "training.tif")
    masks = tifffile.imread(args.data / "training_groundtruth.tif")
    nz = images.shape[0]
    val = list(range(nz - args.n_val, nz))
    train = list(range(0, nz - args.n_val))
    gen = load_generator(args.generator)
    noise = None if args.pixel_noise == "auto" else float(args.pixel_noise)
    seg, card = load_model(args.segmenter)
    res: dict = {
        "pixel_noise": args.pixel_noise,
        "generator": generator_ref(args.generator),
        "segmenter": model_ref(args.segmenter),
        "n": args.n,
        "steps": args.steps,
        "guidance": args.guidance,
        "sampler": args.sampler,
        "threads": args.threads,
    }
    t_all = time.perf_counter()

    real, m, raw = held_out_tiles(images, masks, val, args.n, 256, args.seed)
    real_tr, m_tr, raw_tr = held_out_tiles(images, masks, train, args.n, 256, args.seed + 1)

    # --- generation from held-out masks (timed)
    t0 = time.perf_counter()
    out = sample_sync(
        gen, m, steps=args.steps, guidance=args.guidance, seed=args.seed, sampler=args.sampler, pixel_noise=noise
    )
    dt = time.perf_counter() - t0
    res["seconds_per_sample"] = dt / len(m)
    fake = out.images

    # --- fidelity
    p_fake = segment_tiles(seg, card, fake) >= 0.5
    p_real = segment_tiles(seg, card, real) >= 0.5
    res["fidelity_iou_generated_vs_mask"] = iou(p_fake, m)
    res["ceiling_iou_real_vs_mask"] = iou(p_real, m)

    # --- new pairs: layouts + images
    t0 = time.perf_counter()
    pairs = sample_sync(
        gen,
        None,
        args.n,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed + 100,
        shape=(256, 256),
        sampler=args.sampler,
        pixel_noise=noise,
    )
    res["seconds_per_new_pair"] = (time.perf_counter() - t0) / args.n
    p_pairs = segment_tiles(seg, card, pairs.images) >= 0.5
    res["fidelity_iou_new_pairs"] = iou(p_pairs, pairs.masks != 0)
    res["object_stats"] = {
        "generated_layouts": object_stats(pairs.masks),
        "real_heldout_tiles": object_stats(
            held_out_tiles(images, masks, val, args.n, 256, args.seed + 2, need_fg=False)[1]
        ),
        "real_train_tiles": object_stats(
            held_out_tiles(images, masks, train, args.n, 256, args.seed + 3, need_fg=False)[1]
        ),
    }

    # --- realism
    # realism against the real tiles as they are in the file (generated images keep the training grey range)
    res["c2st_real_vs_generated"] = c2st(raw, fake, args.seed)
    res["c2st_real_vs_new_pairs"] = c2st(raw, pairs.images, args.seed)
    res["c2st_real_heldout_vs_real_train"] = c2st(raw, raw_tr, args.seed)
    f_real = encoder_features(seg, card, raw)
    f_tr = encoder_features(seg, card, raw_tr)
    res["frechet_segmenter_features"] = {
        "generated_vs_real_heldout": frechet(encoder_features(seg, card, fake), f_real),
        "new_pairs_vs_real_heldout": frechet(encoder_features(seg, card, pairs.images), f_real),
        "real_train_vs_real_heldout": frechet(f_tr, f_real),
        "features": "segmenter encoder, global-average-pooled deepest two levels",
    }

    # --- VAE
    x = real.astype(np.float32)[:, None] / 127.5 - 1
    res["vae"] = vae_metrics(gen.vae, x)
    with torch.inference_mode():
        vc = gen.vae_card
        rec = []
        for i in range(0, len(x), 8):
            z = gen.vae.encode(torch.from_numpy(x[i : i + 8])).mean
            zn = (z - float(vc.get("latent_shift", 0.0))) * float(vc["latent_scale"])
            rec.append(to_uint8(decode_latents(gen, zn)))
        rec = np.concatenate(rec)
    p_rec = segment_tiles(seg, card, rec) >= 0.5
    res["vae"]["iou_seg_reconstruction_vs_seg_original"] = iou(p_rec, p_real)
    res["vae"]["iou_seg_reconstruction_vs_mask"] = iou(p_rec, m)

    res["time_s"] = time.perf_counter() - t_all
    res.update(stamp(argv))
    write_json(args.out, res)
    figure(args.out.with_suffix(".png"), real, fake, m)
    tifffile.imwrite(args.out.with_name(args.out.stem + "_samples.tif"), np.stack([real, fake, rec], 1)[:16])
    print(json.dumps({k: v for k, v in res.items() if k != "object_stats"}, indent=1))


if __name__ == "__main__":
    main()
