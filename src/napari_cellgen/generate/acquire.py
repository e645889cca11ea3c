"""The acquisition model: how the user's microscope renders tissue, fitted on their unlabelled images.

The shipped generator draws Lucchi-like tissue at its own pixel size. Adapting its networks to a new
volume in minutes on a CPU loses the mask conditioning (generated objects stop looking like
mitochondria where the masks are). This module leaves the networks alone and fits what differs
between microscopes instead, on the user's images only (no mask):

1. the pixel size: generated tiles are resampled by ``scale`` (generator nm / user nm; area mean,
   masks by majority);
2. the optical blur: a Gaussian ``blur_sigma`` (user pixels);
3. the grey-level response: a monotone tone curve (quantile map) onto the user's histogram with the
   noise's share of the variance taken out;
4. the noise: additive Gaussian ``noise_sigma`` grey levels.

``blur_sigma`` and ``noise_sigma`` are chosen on a grid so that the transformed generated tiles'
radially averaged power spectrum matches the user images' (log10 power, standardised crops). The
fitted parameters are a small JSON dict stored with the generator (``acquisition.json``) and
applied by :func:`apply_acquisition` to every generated pair.
"""

from __future__ import annotations

import numpy as np

BLUR_GRID = (0.0, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5)
CROP = 64
N_BINS = 12


def _crops(images: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images = np.asarray(images)
    out = []
    for _ in range(n):
        im = images[rng.integers(len(images))]
        y = rng.integers(0, im.shape[0] - CROP + 1)
        x = rng.integers(0, im.shape[1] - CROP + 1)
        out.append(im[y : y + CROP, x : x + CROP])
    return np.stack(out).astype(np.float64)


def radial_power(crops: np.ndarray) -> np.ndarray:
    """log10 radially averaged power of standardised crops, in N_BINS log-spaced frequency bins."""
    c = crops - crops.mean((1, 2), keepdims=True)
    c = c / (c.std((1, 2), keepdims=True) + 1e-6)
    p = (np.abs(np.fft.fft2(c)) ** 2).mean(0)
    fy = np.fft.fftfreq(CROP)[:, None]
    fx = np.fft.fftfreq(CROP)[None, :]
    r = np.sqrt(fy**2 + fx**2)
    edges = np.geomspace(1.0 / CROP, 0.5 * np.sqrt(2), N_BINS + 1)
    return np.array([np.log10(p[(r >= lo) & (r < hi)].mean()) for lo, hi in zip(edges[:-1], edges[1:], strict=True)])


def resample(images: np.ndarray, masks: np.ndarray | None, scale: float, size: tuple[int, int] | None = None):
    """Images by area mean, masks by majority, to ``scale`` times their size (or exactly ``size``)."""
    import torch
    from torch.nn import functional as F

    h, w = images.shape[1:]
    size = tuple(size) if size is not None else (max(1, round(h * scale)), max(1, round(w * scale)))
    if size == (h, w):
        return images, masks
    scale = min(size[0] / h, size[1] / w)
    t = torch.from_numpy(np.asarray(images, np.float32))[:, None]
    img = F.interpolate(t, size=size, mode="area" if scale < 1 else "bilinear")[:, 0].numpy()
    if masks is None:
        return img, None
    out = []
    for m in masks:
        ids = np.unique(m[m > 0])
        lab = np.zeros(size, masks.dtype)
        for i in ids:
            frac = F.interpolate(torch.from_numpy((m == i).astype(np.float32))[None, None], size=size,
                                 mode="area" if scale < 1 else "nearest")[0, 0].numpy()
            lab[frac >= 0.5] = i
        out.append(lab)
    return img, np.stack(out)


def upsample_labels(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A 2D label image resized to ``size`` by nearest neighbour (pixel centres)."""
    yi = np.minimum((np.arange(size[0]) + 0.5) * m.shape[0] / size[0], m.shape[0] - 1).astype(int)
    xi = np.minimum((np.arange(size[1]) + 0.5) * m.shape[1] / size[1], m.shape[1] - 1).astype(int)
    return m[yi][:, xi]


def _blur(images: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    if sigma <= 0:
        return images
    return np.stack([gaussian_filter(im, sigma, mode="reflect") for im in images])


def _tone_table(src: np.ndarray, ref: np.ndarray, noise_sigma: float) -> tuple[list, list]:
    """Quantile map from ``src`` values onto ``ref``'s distribution with the noise variance removed."""
    qs = np.linspace(0, 1, 101)
    s = np.quantile(src, qs)
    r = np.quantile(ref, qs)
    mu, var = float(ref.mean()), float(ref.var())
    shrink = np.sqrt(max(var - noise_sigma**2, 0.05 * var) / max(var, 1e-6))
    r = mu + (r - mu) * shrink
    s = np.maximum.accumulate(s + np.arange(101) * 1e-6)  # strictly increasing for interp
    return s.tolist(), r.tolist()


def _render(images, blur_sigma, tone, noise_sigma, rng):
    x = _blur(images, blur_sigma)
    x = np.interp(x, np.asarray(tone[0]), np.asarray(tone[1]))
    if noise_sigma > 0:
        x = x + rng.normal(0.0, noise_sigma, x.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def fit_acquisition(generated: np.ndarray, user: np.ndarray, scale: float = 1.0, seed: int = 0,
                    n_crops: int = 400) -> dict:
    """Fit blur, tone curve and noise so ``generated`` (N, H, W) uint8 tiles look like ``user`` images.

    ``scale``: generator pixel size / user pixel size (0.5: the user's pixels are twice as large).
    Only ``user``'s pixels are read (no masks). Returns the JSON-able parameter dict.
    """
    gen, _ = resample(np.asarray(generated, np.float32), None, scale)
    user = np.asarray(user)
    if min(gen.shape[1:]) < CROP or min(user.shape[1:]) < CROP:
        raise ValueError(f"images must be at least {CROP} px on each side to fit the acquisition model")
    target = radial_power(_crops(user, n_crops, seed))
    # noise grid: from 0 to the user images' own neighbour-difference noise estimate x 1.5
    d = np.diff(user.astype(np.float64), axis=2)
    est = float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2))
    noise_grid = sorted({0.0, *np.round(np.linspace(0, 1.5 * est, 10), 2).tolist()})
    best = None
    for b in BLUR_GRID:
        blurred = _blur(gen, b)
        for n in noise_grid:
            tone = _tone_table(blurred, user, n)
            out = _render(gen, b, tone, n, np.random.default_rng(seed))
            dist = float(np.mean((radial_power(_crops(out, n_crops, seed + 1)) - target) ** 2))
            if best is None or dist < best["spectrum_distance"]:
                best = {"blur_sigma": b, "noise_sigma": n, "tone": tone, "spectrum_distance": dist}
    raw = float(np.mean((radial_power(_crops(gen, n_crops, seed + 1)) - target) ** 2))
    return {"scale": float(scale), **best, "spectrum_distance_before": raw,
            "noise_estimate": est, "grid": {"blur": list(BLUR_GRID), "noise": noise_grid}}


def apply_acquisition(images: np.ndarray, masks: np.ndarray | None, params: dict, seed: int = 0,
                      size: tuple[int, int] | None = None):
    """Render generated (N, H, W) pairs as the fitted microscope would: (images uint8, masks).

    ``size``: the output's (H, W) in the user's pixels (default: the input's times ``params["scale"]``).
    """
    img, m = resample(np.asarray(images, np.float32), masks, params["scale"], size)
    out = _render(img, params["blur_sigma"], params["tone"], params["noise_sigma"], np.random.default_rng(seed))
    return out, m
