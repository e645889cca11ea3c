"""How real do generated EM tiles look: a classifier two-sample test and per-image statistics.

- :func:`c2st`: a small CNN trained to tell tiles of set ``a`` from set ``b``, scored by grouped
  k-fold cross-validation (every crop is tested once, by a classifier that never saw its group:
  crops of one source tile, or a real tile and the image generated from its mask, share a group),
  averaged over repeats with different fold splits. 0.5 = indistinguishable, 1.0 = always told
  apart. The confidence interval resamples whole groups (cluster bootstrap), because crops of one
  tile are not independent; a Wilson interval that treats crops as independent is given beside it.
- :func:`grey_stats` / :func:`grey_distance`: grey-level statistics per image and distances
  between two sets (earth mover's and Kolmogorov-Smirnov).
- :func:`power_spectrum` / :func:`spectrum_bands`: radially averaged power spectra and their
  log10 ratio per octave band of spatial frequency (too smooth images have negative high bands).

Tiles are uint8 (N, H, W) in the generator's grey scale: real slices normalised per slice with
:func:`napari_cellgen.generate.config.prepare_slice`, generated ones as the sampler returns them.
Torch is imported only inside :func:`c2st`.
"""

from __future__ import annotations

import math

import numpy as np


def crop_tiles(tiles, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping ``size`` x ``size`` crops of (N, H, W) tiles and the tile index of each."""
    tiles = np.asarray(tiles)
    n, h, w = tiles.shape
    ky, kx = h // size, w // size
    if not ky or not kx:
        raise ValueError(f"tiles of {h}x{w} are smaller than a {size}x{size} crop")
    out = tiles[:, : ky * size, : kx * size].reshape(n, ky, size, kx, size).transpose(0, 1, 3, 2, 4)
    return np.ascontiguousarray(out.reshape(n * ky * kx, size, size)), np.repeat(np.arange(n), ky * kx)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``k / n``."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, mid - half), min(1.0, mid + half))


def cluster_bootstrap(correct, groups, n_boot: int = 2000, seed: int = 0, level: float = 0.95):
    """Percentile interval of the mean of ``correct`` when whole ``groups`` are resampled."""
    correct = np.asarray(correct, np.float64)
    groups = np.asarray(groups)
    ids, inv = np.unique(groups, return_inverse=True)
    sums = np.bincount(inv, weights=correct, minlength=len(ids))
    counts = np.bincount(inv, minlength=len(ids)).astype(np.float64)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(ids), (n_boot, len(ids)))
    stats = sums[pick].sum(1) / counts[pick].sum(1)
    a = (1 - level) / 2
    return (float(np.quantile(stats, a)), float(np.quantile(stats, 1 - a)))


def grouped_folds(labels, groups, k: int, rng) -> np.ndarray:
    """Fold (0..k-1) of each sample: whole groups go to one fold, dealt per class for balance."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    fold = np.empty(len(groups), np.int64)
    ids = np.unique(groups)
    # a group's class: the label of its first sample (a paired group holds both classes)
    first = {g: labels[np.flatnonzero(groups == g)[0]] for g in ids}
    offset = int(rng.integers(k))
    for cls in np.unique(labels):
        mine = np.array([g for g in ids if first[g] == cls])
        for i, g in enumerate(rng.permutation(mine)):
            fold[groups == g] = (offset + i) % k
        offset += len(mine)
    return fold


def small_cnn(width: int = 8):
    """A small CNN (15k parameters at width 8, 61k at 16): a lossless 2x space-to-depth (keeps the
    finest detail), four conv blocks with BatchNorm, global average pooling and a linear logit."""
    from torch import nn

    w = width

    def block(cin, cout, stride):
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    return nn.Sequential(
        nn.PixelUnshuffle(2),
        *block(4, w, 1),
        *block(w, 2 * w, 2),
        *block(2 * w, 4 * w, 2),
        *block(4 * w, 4 * w, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * w, 1),
    )


def _to_tensor(x, standardize: bool = False):
    import torch

    x = np.asarray(x, np.float32) / 127.5 - 1.0
    if standardize:  # each crop to mean 0, std 1: only texture and structure are left to go by
        x = (x - x.mean((1, 2), keepdims=True)) / (x.std((1, 2), keepdims=True) + 1e-3)
    return torch.from_numpy(x)[:, None]


def _train_predict(xtr, ytr, xte, steps: int, batch: int, lr: float, seed: int, width: int):
    """Train one classifier (dihedral augmentation); returns (test logits, train accuracy)."""
    import torch
    from torch.nn import functional as F

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = small_cnn(width)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    net.train()
    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(xtr), batch))
        x = torch.rot90(xtr[idx], int(rng.integers(4)), (-2, -1))
        if rng.random() < 0.5:
            x = x.flip(-1)
        loss = F.binary_cross_entropy_with_logits(net(x)[:, 0], ytr[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    with torch.inference_mode():
        test = torch.cat([net(xte[i : i + 256])[:, 0] for i in range(0, len(xte), 256)])
        sub = torch.from_numpy(rng.permutation(len(xtr))[:512])
        tr_acc = float(((net(xtr[sub])[:, 0] > 0).float() == ytr[sub]).float().mean())
    return test.numpy(), tr_acc


def c2st(
    a,
    b,
    groups_a=None,
    groups_b=None,
    *,
    folds: int = 5,
    repeats: int = 1,
    steps: int = 150,
    batch: int = 32,
    lr: float = 3e-3,
    width: int = 8,
    seed: int = 0,
    n_boot: int = 2000,
    standardize: bool = False,
) -> dict:
    """Classifier two-sample test of uint8 crops ``a`` (label 0) against ``b`` (label 1).

    ``groups_a`` / ``groups_b``: integer group of each crop (default: every crop its own group);
    groups are kept whole within a fold, and one group id may appear in both sets (a pair).
    ``standardize``: give the classifier each crop shifted and scaled to mean 0, std 1, so that it
    cannot go by grey levels or contrast, only by texture and structure.
    Returns accuracy (mean over all test predictions of all repeats), its 95 % cluster-bootstrap
    and Wilson intervals, per-fold accuracies, train accuracy and the sizes.
    """
    import torch

    a, b = np.asarray(a), np.asarray(b)
    ga = np.arange(len(a)) if groups_a is None else np.asarray(groups_a)
    gb = np.arange(len(a), len(a) + len(b)) if groups_b is None else np.asarray(groups_b)
    x = _to_tensor(np.concatenate([a, b]), standardize)
    y = np.concatenate([np.zeros(len(a)), np.ones(len(b))])
    groups = np.concatenate([ga, gb])
    if len(np.unique(groups)) < folds:
        raise ValueError(f"{len(np.unique(groups))} groups cannot fill {folds} folds")
    yt = torch.from_numpy(y.astype(np.float32))
    correct = np.zeros((repeats, len(y)))
    fold_acc, train_acc = [], []
    for r in range(repeats):
        rng = np.random.default_rng(seed + 1000 * r)
        fold = grouped_folds(y, groups, folds, rng)
        for f in range(folds):
            te, tr = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
            logits, tr_acc = _train_predict(
                x[tr], yt[tr], x[te], steps, batch, lr, seed + 1000 * r + f, width
            )
            hit = (logits > 0).astype(np.float64) == y[te]
            correct[r, te] = hit
            fold_acc.append(float(hit.mean()))
            train_acc.append(tr_acc)
    per_item = correct.mean(0)  # averaged over repeats: one score per crop
    acc = float(per_item.mean())
    hits = int(round(acc * len(y)))
    return {
        "accuracy": acc,
        "ci95": cluster_bootstrap(per_item, groups, n_boot, seed),
        "ci95_wilson_crops": wilson(hits, len(y)),
        "fold_accuracy": fold_acc,
        "train_accuracy": float(np.mean(train_acc)),
        "n_a": int(len(a)),
        "n_b": int(len(b)),
        "n_groups": int(len(np.unique(groups))),
        "folds": folds,
        "repeats": repeats,
        "steps": steps,
        "standardize": standardize,
    }


def grey_stats(tiles) -> dict:
    """Per-image mean, std and percentiles 1/50/99 of uint8 tiles: their mean and std over images."""
    t = np.asarray(tiles, np.float64).reshape(len(tiles), -1)
    per = {
        "mean": t.mean(1),
        "std": t.std(1),
        "p1": np.percentile(t, 1, axis=1),
        "p50": np.percentile(t, 50, axis=1),
        "p99": np.percentile(t, 99, axis=1),
    }
    return {k: {"mean": float(v.mean()), "std": float(v.std())} for k, v in per.items()}


def grey_distance(a, b, max_pixels: int = 2_000_000, seed: int = 0) -> dict:
    """Earth mover's (in grey levels) and KS distances of the pooled pixels and of per-image stats."""
    from scipy import stats

    rng = np.random.default_rng(seed)

    def pooled(t):
        flat = np.asarray(t).ravel()
        return flat if flat.size <= max_pixels else flat[rng.choice(flat.size, max_pixels, replace=False)]

    pa, pb = pooled(a), pooled(b)
    ha = np.bincount(pa, minlength=256).astype(np.float64)
    hb = np.bincount(pb, minlength=256).astype(np.float64)
    levels = np.arange(256)
    out = {
        "pixels_emd": float(stats.wasserstein_distance(levels, levels, ha, hb)),
        "pixels_ks": float(np.abs(np.cumsum(ha) / ha.sum() - np.cumsum(hb) / hb.sum()).max()),
    }
    fa = np.asarray(a, np.float64).reshape(len(a), -1)
    fb = np.asarray(b, np.float64).reshape(len(b), -1)
    for name, fn in (("mean", lambda t: t.mean(1)), ("std", lambda t: t.std(1))):
        out[f"per_image_{name}_ks"] = float(stats.ks_2samp(fn(fa), fn(fb)).statistic)
    return out


def power_spectrum(tiles) -> np.ndarray:
    """Mean radially averaged power spectrum of (N, S, S) tiles (mean removed, Hann window).

    Index r = r cycles per S pixels (frequency r / S cycles/pixel), r = 0 .. S // 2; in variance per
    frequency (:func:`napari_cellgen.generate.pixel_noise.radial_psd`). Compare spectra as ratios.
    """
    from .generate.pixel_noise import radial_psd

    return radial_psd(tiles)


def spectrum_bands(ref, other, size: int) -> list[dict]:
    """log10(power of ``other`` / power of ``ref``) per octave band of spatial frequency.

    Bands [f, 2f) in cycles/pixel from 1/size up to 1/2 (the last band includes 1/2).
    """
    ref, other = np.asarray(ref), np.asarray(other)
    out, lo = [], 1
    while lo < size // 2:
        hi = 2 * lo if 2 * lo < size // 2 else size // 2 + 1  # the last band includes Nyquist
        top = min(hi, size // 2)
        out.append(
            {
                "cycles_per_px": [lo / size, top / size],
                "period_px": [size / top, size / lo],
                "log10_ratio": float(np.log10(other[lo:hi].sum() / ref[lo:hi].sum())),
            }
        )
        lo *= 2
    return out
