"""Pixel noise on decoded images: the detail a mean decoder cannot draw, white or with a fitted spectrum.

The VAE decodes the mean image. Real EM also carries shot noise and fine texture the latent cannot
hold, so sampling adds independent Gaussian noise, one seeded stream per image (the result does not
depend on the batch size):

- white, of std ``noise_std`` (the VAE card's, measured on the finest scale by ``estimate_noise_std``);
- or, when the card has ``noise_psd``, coloured: white noise filtered so its radially averaged power
  spectrum is the power real tiles have and their reconstructions lack, ``max(0, P_real - P_rec)``
  per spatial frequency (:func:`fit_noise_psd`). This also fills the 4-8 px band that the decoder
  draws too weakly, not only the 2-4 px band that white noise matches.
"""

from __future__ import annotations

import numpy as np


def radial_psd(tiles) -> np.ndarray:
    """Radially averaged power spectral density of (N, S, S) tiles, in variance per frequency.

    Hann-windowed and normalised by the window's energy, so white noise of variance s^2 gives s^2 at
    every frequency. Index r = r cycles per S pixels, r = 0 .. S // 2.
    """
    t = np.asarray(tiles, np.float64)
    n, s, s2 = t.shape
    if s != s2:
        raise ValueError(f"square tiles needed, got {s}x{s2}")
    win = np.outer(np.hanning(s), np.hanning(s))
    t = (t - t.mean((1, 2), keepdims=True)) * win
    p = (np.abs(np.fft.fft2(t)) ** 2).mean(0) / (win**2).sum()
    f = np.fft.fftfreq(s) * s
    r = np.round(np.hypot(*np.meshgrid(f, f, indexing="ij"))).astype(int)
    keep = r <= s // 2
    return np.bincount(r[keep], weights=p[keep]) / np.bincount(r[keep])


def fit_noise_psd(real, reconstructed) -> dict:
    """The card's ``noise_psd``: the power real tiles have and their reconstructions lack.

    ``real``, ``reconstructed``: (N, S, S) tiles in [-1, 1] units. Returns ``{"size": S, "power": [...]}``
    (S // 2 + 1 values, the mean level excluded).
    """
    real, rec = np.asarray(real), np.asarray(reconstructed)
    if real.shape != rec.shape:
        raise ValueError(f"real {real.shape} and reconstructed {rec.shape} tiles differ in shape")
    d = np.clip(radial_psd(real) - radial_psd(rec), 0.0, None)
    d[0] = 0.0
    return {"size": int(real.shape[-1]), "power": [float(v) for v in d]}


def coloured(white, psd: dict):
    """Filter white noise (H, W) of unit variance so its spectrum is ``psd`` (a card's ``noise_psd``)."""
    import torch

    h, w = white.shape[-2:]
    size, power = int(psd["size"]), np.asarray(psd["power"], np.float64)
    fy, fx = np.fft.fftfreq(h), np.fft.fftfreq(w)
    r = np.hypot(*np.meshgrid(fy, fx, indexing="ij")) * size  # in the fit's index units
    amp = np.sqrt(np.interp(r, np.arange(len(power)), power, right=power[-1]))
    spec = torch.fft.fft2(white.double()) * torch.from_numpy(amp)
    return torch.fft.ifft2(spec).real.to(white.dtype)


def image_seed(seed: int, i: int) -> int:
    """The seed of image ``i``'s own random stream: the same whatever batch the image is sampled in."""
    return (int(seed) * 1_000_003 + int(i) + 1) % (2**63)


def add_pixel_noise(x, sigma: float, seed: int, first: int, clip: bool = True, psd: dict | None = None):
    """Add Gaussian pixel noise to (B, 1, H, W) images; image ``first + i`` gets its own seeded stream.

    White of std ``sigma``, or coloured by ``psd`` (then ``sigma`` is not used). ``clip``: back into
    [-1, 1] (a wall of pixels at both ends); else the noise's tails pass beyond, as real slices'
    darkest and brightest 1 % lie beyond their 1-99 % range.
    """
    import torch

    if psd is None and sigma <= 0:
        return x
    out = x.clone()
    for i in range(len(x)):
        g = torch.Generator().manual_seed(image_seed(seed, first + i))
        white = torch.randn(x[i].shape, generator=g)  # the same stream on any device
        noise = sigma * white if psd is None else coloured(white[0], psd)[None]
        out[i] += noise.to(x.device)
    return out.clamp(-1, 1) if clip else out
