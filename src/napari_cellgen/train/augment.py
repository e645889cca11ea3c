"""Batched augmentations (torch) that keep image and mask aligned."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def _gauss_kernel(sigma: float) -> torch.Tensor:
    r = max(1, int(round(2.5 * sigma)))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    k = _gauss_kernel(sigma)
    c = x.shape[1]
    kx = k.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    ky = k.view(1, 1, -1, 1).repeat(c, 1, 1, 1)
    p = k.numel() // 2
    x = F.conv2d(F.pad(x, (p, p, 0, 0), mode="reflect"), kx, groups=c)
    return F.conv2d(F.pad(x, (0, 0, p, p), mode="reflect"), ky, groups=c)


def elastic_grid(n: int, size: tuple[int, int], alpha: float, grid: int, g: torch.Generator) -> torch.Tensor:
    """A smooth random displacement field as a ``grid_sample`` grid (N, H, W, 2)."""
    h, w = size
    disp = (torch.rand(n, 2, grid, grid, generator=g) * 2 - 1) * alpha
    disp = F.interpolate(disp, size=(h, w), mode="bicubic", align_corners=True)
    ys = torch.linspace(-1, 1, h)
    xs = torch.linspace(-1, 1, w)
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2) as (x, y)
    return base.unsqueeze(0) + disp.permute(0, 2, 3, 1)


def augment(
    img: torch.Tensor,
    mask: torch.Tensor,
    g: torch.Generator,
    *,
    elastic_p: float = 0.3,
    intensity: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips, 90° rotations, elastic deformation, contrast/brightness/gamma, noise and blur.

    ``img`` (N, C, H, W) normalised to about [0, 1]; ``mask`` (N, 1, H, W) in [0, 1].
    Geometric transforms are applied identically to both.
    """
    n = img.shape[0]
    out_i, out_m = [], []
    for i in range(n):
        a, m = img[i], mask[i]
        k = int(torch.randint(0, 4, (1,), generator=g))
        if k:
            a, m = torch.rot90(a, k, (1, 2)), torch.rot90(m, k, (1, 2))
        if torch.rand(1, generator=g) < 0.5:
            a, m = a.flip(2), m.flip(2)
        out_i.append(a)
        out_m.append(m)
    img, mask = torch.stack(out_i), torch.stack(out_m)
    if elastic_p > 0:
        sel = torch.rand(n, generator=g) < elastic_p
        if sel.any():
            idx = sel.nonzero()[:, 0]
            grid = elastic_grid(len(idx), img.shape[-2:], alpha=0.03, grid=5, g=g)
            img[idx] = F.grid_sample(img[idx], grid, mode="bilinear", padding_mode="reflection", align_corners=True)
            mask[idx] = F.grid_sample(mask[idx], grid, mode="bilinear", padding_mode="reflection", align_corners=True)
    if intensity:
        shape = (n, 1, 1, 1)
        contrast = torch.exp((torch.rand(shape, generator=g) - 0.5) * 0.6)
        bright = (torch.rand(shape, generator=g) - 0.5) * 0.3
        img = (img - 0.5) * contrast + 0.5 + bright
        gamma = torch.exp((torch.rand(shape, generator=g) - 0.5) * 0.6)
        img = img.clamp(0, 1.5).pow(gamma)
        noise = torch.rand(shape, generator=g) * 0.06
        img = img + torch.randn(img.shape, generator=g) * noise
        if torch.rand(1, generator=g) < 0.2:
            img = blur(img, float(0.5 + torch.rand(1, generator=g)))
    return img.contiguous(), mask.clamp(0, 1).contiguous()
