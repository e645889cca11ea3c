"""Batched augmentations (torch) that keep image and mask aligned."""

from __future__ import annotations

import math

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
    appearance: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips, 90° rotations, elastic deformation, contrast/brightness/gamma, noise and blur.

    ``img`` (N, C, H, W) normalised to about [0, 1]; ``mask`` (N, 1, H, W) in [0, 1].
    Geometric transforms are applied identically to both. ``appearance`` > 0 adds the strong
    appearance changes of :func:`appearance` (image only) at that strength; 0 draws nothing more.
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
    if appearance > 0:
        img = _appearance(img, g, appearance)
    return img.contiguous(), mask.clamp(0, 1).contiguous()


# --------------------------------------------------------------------------- appearance (other labs' EM)
# Full-strength ranges; ``strength`` s in [0, 1] scales them (multiplicative ones on a log scale) and the
# probabilities of the rare events. Each continuous transform reaches a random share of the samples, so
# some patches stay close to the source lab's look.
CONTRAST, GAMMA = 2.5, 2.5  # x/÷ : contrast in [0.4, 2.5], gamma in [0.4, 2.5]
BRIGHTNESS = 0.3  # ± additive offset
CHANNEL_GAIN, CHANNEL_OFFSET = 1.15, 0.05  # per-slice (channel) differences
INVERT_P = 0.1
NOISE, SHOT, SPECKLE, GRAIN = 0.15, 0.15, 0.15, 0.08  # std of additive, sqrt(x)-scaled, x-scaled, grain noise
BLUR = 2.0  # Gaussian sigma in [0, BLUR] px
RESOLUTION = 0.4  # downsample by [RESOLUTION, 1], then back
SHADING_GAIN, SHADING_OFFSET = 0.3, 0.1  # low-frequency uneven illumination (log-gain, offset)
STRIPES_P, STRIPES = 0.15, 0.06  # faint periodic stripes (knife chatter) and scratches
ZMIX = (-0.3, 0.6)  # weight of the neighbouring slices mixed into each slice (< 0: sections less alike)
SINGLE_SLICE_P = 0.1  # neighbour channels replaced by the centre one (independent-slice context)
LIMITS = (-0.5, 1.5)


def blur_each(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian blur of each sample ``x[i]`` with its own ``sigma[i]`` (px; 0 leaves it unchanged)."""
    n, c, h, w = x.shape
    r = max(1, int(math.ceil(2.5 * float(sigma.max()))))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t[None] / sigma.to(x.dtype).clamp_min(1e-3)[:, None]) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n*c, K)
    y = F.pad(x.reshape(1, n * c, h, w), (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k.view(n * c, 1, 1, -1), groups=n * c)
    y = F.conv2d(y, k.view(n * c, 1, -1, 1), groups=n * c)
    return y.view(n, c, h, w)


def resample(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x`` (N, C, H, W) as if imaged at ``1 / factor`` times the pixel size, brought back to H x W."""
    h, w = x.shape[-2:]
    small = (max(1, round(h * factor)), max(1, round(w * factor)))
    if small == (h, w):
        return x
    down = F.interpolate(x, size=small, mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(down, size=(h, w), mode="bilinear", align_corners=False)


def mix_slices(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Each channel (slice) mixed with the mean of its two neighbours, ``weight[i]`` per sample.

    > 0 simulates thicker sections (neighbouring slices alike), < 0 thinner ones / a larger z step.
    """
    if x.shape[1] < 2:
        return x
    p = torch.cat([x[:, :1], x, x[:, -1:]], 1)
    nb = 0.5 * (p[:, :-2] + p[:, 2:])
    wt = weight.view(-1, 1, 1, 1).to(x.dtype)
    return (1 - wt) * x + wt * nb


def _smooth_field(n: int, k: int, size: tuple[int, int], g: torch.Generator, dtype) -> torch.Tensor:
    """``k`` smooth random fields per sample, about unit amplitude (N, k, H, W)."""
    f = torch.randn(n, k, 4, 4, generator=g, dtype=dtype)
    f = F.interpolate(f, size=(16, 16), mode="bicubic", align_corners=True)  # bicubic at full size is slow
    return F.interpolate(f, size=size, mode="bilinear", align_corners=True)


def _stripes(n: int, c: int, size: tuple[int, int], u: torch.Tensor, g: torch.Generator, dtype) -> torch.Tensor:
    """Faint periodic stripes plus a few thin scratches across each slice, at a random angle per sample."""
    h, w = size
    ys = torch.linspace(-1, 1, h, dtype=dtype).view(1, h, 1)
    xs = torch.linspace(-1, 1, w, dtype=dtype).view(1, 1, w)
    ang = u[:, 0].view(n, 1, 1) * math.pi
    coord = (xs * torch.cos(ang) + ys * torch.sin(ang)).unsqueeze(1)  # (n, 1, H, W), in about [-1.4, 1.4]
    period = 0.05 + 0.25 * u[:, 1].view(n, 1, 1, 1)
    phase = torch.rand(n, c, 1, 1, generator=g, dtype=dtype) * 2 * math.pi
    out = u[:, 2].view(n, 1, 1, 1) * torch.sin(2 * math.pi * coord / period + phase)
    pos = torch.rand(n, c, 3, generator=g, dtype=dtype) * 2.8 - 1.4  # three scratches per slice
    sign = torch.randint(0, 2, (n, c, 3), generator=g).to(dtype) * 2 - 1
    width = 0.004 + 0.01 * u[:, 3].view(n, 1, 1)
    for j in range(3):
        d = (coord - pos[:, :, j, None, None]) / width[..., None]  # a triangle profile: exp() is slow here
        out = out + u[:, 4].view(n, 1, 1, 1) * sign[:, :, j, None, None] * (1 - d.abs()).clamp_min(0)
    return out


def appearance(img: torch.Tensor, g: torch.Generator, strength: float) -> torch.Tensor:
    """Random changes of how EM looks (other microscopes, ssTEM, other staining); never of the structure.

    ``img`` (N, C, H, W) normalised to about [0, 1], C = 2 * context + 1 neighbouring slices.
    Per sample, with random parameters: strong contrast / brightness / gamma jitter, inversion
    (rarely), per-slice intensity differences, section-thickness jitter (slices mixed with their
    neighbours, or the neighbours replaced by the centre slice), uneven illumination, faint stripes and
    scratches, blur, additive / shot / speckle noise and film grain, and resolution jitter (a larger
    pixel size brought back to this one). ``strength`` 0 returns ``img`` itself and draws nothing from
    ``g``; 1 is the full range. The labels stay valid: nothing moves. Output clamped to ``LIMITS``.
    """
    s = float(strength)
    if s <= 0:
        return img
    n, c, h, w = img.shape
    dt = img.dtype
    u = torch.rand(n, 17, generator=g, dtype=dt)  # per-sample parameters, in a fixed order
    on = torch.rand(n, 10, generator=g, dtype=dt)  # per-sample gates
    sym = u * 2 - 1
    ch = torch.rand(n, c, 2, generator=g, dtype=dt) * 2 - 1  # per-slice gain and offset
    x = img.clone()

    def pick(col: int, p: float, lo: float = 0.0) -> torch.Tensor:
        return ((on[:, col] >= lo) & (on[:, col] < lo + p)).nonzero()[:, 0]

    def ln(v: float) -> float:
        return math.log(v) * s

    # section thickness: neighbours mixed in, or the neighbours replaced by the centre slice
    if c > 1:
        i = pick(0, 0.5)
        if len(i):
            x[i] = mix_slices(x[i], (ZMIX[0] + (ZMIX[1] - ZMIX[0]) * u[i, 0]) * s)
        i = pick(1, SINGLE_SLICE_P * s)
        if len(i):
            x[i] = x[i, c // 2 : c // 2 + 1].expand(len(i), c, h, w)
    # tone: gamma, then one gain and offset per slice: contrast and brightness per sample, and a
    # slight difference per slice (neighbouring sections never look quite alike)
    tone = (on[:, 2] < 0.8).to(dt)
    i = tone.nonzero()[:, 0]
    if len(i):
        x[i] = x[i].clamp_(0, 1.5).pow_(torch.exp(sym[i, 1] * ln(GAMMA)).view(-1, 1, 1, 1))
    per = (on[:, 3] < 0.5).to(dt).view(n, 1) * (c > 1)
    gain = torch.exp(sym[:, 2] * ln(CONTRAST) * tone).view(n, 1) * torch.exp(ch[..., 0] * ln(CHANNEL_GAIN) * per)
    offset = 0.5 - 0.5 * gain + (sym[:, 3] * BRIGHTNESS * s * tone).view(n, 1) * gain
    offset = offset + ch[..., 1] * CHANNEL_OFFSET * s * per
    x = torch.addcmul(offset.view(n, c, 1, 1), x, gain.view(n, c, 1, 1))
    # ssTEM-like texture: uneven illumination, faint stripes (knife chatter) and scratches
    i = pick(4, 0.5)
    if len(i):
        f = _smooth_field(len(i), 2, (h, w), g, dt)
        a = x[i] - 0.5
        x[i] = a.mul_(torch.exp(f[:, :1] * (u[i, 4] * SHADING_GAIN * s).view(-1, 1, 1, 1))).add_(
            0.5 + f[:, 1:] * (u[i, 5] * SHADING_OFFSET * s).view(-1, 1, 1, 1))
    i = pick(5, STRIPES_P * s)
    if len(i):
        p = u[i, 6:11] * torch.tensor([1, 1, STRIPES * s * 0.5, 1, STRIPES * s], dtype=dt)
        x[i] = x[i] + _stripes(len(i), c, (h, w), p, g, dt)
    # optics: blur, or (below, after the noise) a larger pixel size; never both
    i = pick(6, 0.3)
    if len(i):
        x[i] = blur_each(x[i], u[i, 11] * BLUR * s)
    # detector: additive, shot (~sqrt(x)) and speckle (~x) noise from one draw, and film grain
    i = pick(7, 0.6)
    if len(i):
        a = x[i]
        pos = a.clamp(0, 1.5)
        sd = [(u[i, k] * amp * s).view(-1, 1, 1, 1) for k, amp in ((12, NOISE), (13, SHOT), (14, SPECKLE))]
        std = pos.sqrt().mul_(sd[1]).add_(sd[0]).addcmul_(pos, sd[2])
        x[i] = a.addcmul_(torch.randn(a.shape, generator=g, dtype=dt), std)
    i = pick(8, 0.3)
    if len(i):
        coarse = torch.randn(len(i), c, (h + 1) // 2, (w + 1) // 2, generator=g, dtype=dt)
        coarse.mul_((u[i, 15] * GRAIN * s).view(-1, 1, 1, 1))
        x[i] = x[i] + F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    # resolution: a larger pixel size, resampled back (the mask keeps its own)
    for k in pick(6, 0.35, lo=0.3).tolist():
        x[k : k + 1] = resample(x[k : k + 1], 1 - (1 - RESOLUTION) * s * float(u[k, 16]))
    # inversion (an inverted look-up table, another detector or contrast mode)
    i = pick(9, INVERT_P * s)
    if len(i):
        x[i] = 1 - x[i]
    return x.clamp_(*LIMITS)

_appearance = appearance  # ``augment``'s parameter of that name shadows the function
