"""A small, fully convolutional KL-VAE for grayscale EM tiles in [-1, 1].

256x256 tiles map to a ``latent_channels x 32 x 32`` latent (downsampling 2**len(channels)).
Full-resolution work is kept cheap: the encoder enters with a light stem and a strided
convolution, the decoder leaves through a light two-convolution head, and the residual blocks
run at 1/2 resolution and below. Any input whose sides are multiples of :attr:`ConvVAE.divisor`
works, so the VAE trains on small crops and encodes whole slices.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, c // 4) or 1, c)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.n1, self.c1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.n2, self.c2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        h = self.c1(F.silu(self.n1(x)))
        h = self.c2(F.silu(self.n2(h)))
        return self.skip(x) + h


class DiagonalGaussian:
    """Posterior ``N(mean, exp(logvar))`` with a reparameterised, generator-aware sample."""

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + self.std * eps

    def kl(self) -> torch.Tensor:
        """KL to N(0, 1), averaged over latent elements."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).mean()


class ConvVAE(nn.Module):
    """KL-regularised convolutional autoencoder.

    Parameters
    ----------
    in_channels : image channels (1 for EM)
    channels : features per downsampling level; the image is downsampled 2**len(channels) times
    latent_channels : channels of the latent
    blocks : residual blocks per level in the encoder (the decoder gets ``blocks + 1``)
    stem : features of the full-resolution stem / head
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: tuple[int, ...] = (32, 64, 128),
        latent_channels: int = 4,
        blocks: int = 1,
        stem: int = 16,
    ):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if not channels or latent_channels < 1 or blocks < 0 or stem < 1:
            raise ValueError("channels must be non-empty; latent_channels, stem >= 1; blocks >= 0")
        self.config = {
            "in_channels": in_channels,
            "channels": list(channels),
            "latent_channels": latent_channels,
            "blocks": blocks,
            "stem": stem,
        }
        # encoder: stem at full resolution, then one strided conv + res blocks per level
        enc: list[nn.Module] = [nn.Conv2d(in_channels, stem, 3, padding=1)]
        cin = stem
        for c in channels:
            enc.append(nn.Conv2d(cin, c, 3, stride=2, padding=1))
            enc += [ResBlock(c, c) for _ in range(blocks)]
            cin = c
        enc += [ResBlock(cin, cin), _norm(cin), nn.SiLU(), nn.Conv2d(cin, 2 * latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        # decoder mirrors it, one more res block per level
        dec: list[nn.Module] = [
            nn.Conv2d(latent_channels, channels[-1], 3, padding=1),
            ResBlock(channels[-1], channels[-1]),
        ]
        cin = channels[-1]
        for c in reversed(channels):
            dec += [ResBlock(cin if i == 0 else c, c) for i in range(blocks + 1)]
            dec += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(c, c // 2 if c > stem else stem, 3, padding=1),
            ]
            cin = c // 2 if c > stem else stem
        dec += [
            _norm(cin),
            nn.SiLU(),
            nn.Conv2d(cin, stem, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(stem, in_channels, 3, padding=1),
        ]
        self.decoder = nn.Sequential(*dec)

    @property
    def divisor(self) -> int:
        """Image sides must be multiples of this (the latent is this many times smaller)."""
        return 2 ** len(self.config["channels"])

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        return DiagonalGaussian(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent -> image (unbounded; clamp to [-1, 1] for display)."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True):
        post = self.encode(x)
        z = post.sample(generator) if sample else post.mean
        return self.decode(z), post


def _gauss_window(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    ax = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Mean SSIM (Gaussian window 11, sigma 1.5) of single-channel batches; valid region only."""
    w = _gauss_window(device=x.device).to(x.dtype)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = F.conv2d(x, w), F.conv2d(y, w)
    sxx = F.conv2d(x * x, w) - mx**2
    syy = F.conv2d(y * y, w) - my**2
    sxy = F.conv2d(x * y, w) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.mean()


def gradient_l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L1 distance between finite-difference gradients (keeps membranes sharp)."""
    dx = (x[..., :, 1:] - x[..., :, :-1]) - (y[..., :, 1:] - y[..., :, :-1])
    dy = (x[..., 1:, :] - x[..., :-1, :]) - (y[..., 1:, :] - y[..., :-1, :])
    return dx.abs().mean() + dy.abs().mean()


class PatchDiscriminator(nn.Module):
    """A light PatchGAN (hinge loss) that can sharpen VAE reconstructions."""

    def __init__(self, in_channels: int = 1, base: int = 32, layers: int = 3):
        super().__init__()
        self.config = {"in_channels": in_channels, "base": base, "layers": layers}
        mods: list[nn.Module] = [nn.Conv2d(in_channels, base, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        c = base
        for _ in range(1, layers):
            mods += [nn.Conv2d(c, 2 * c, 4, 2, 1), _norm(2 * c), nn.LeakyReLU(0.2, True)]
            c *= 2
        mods += [nn.Conv2d(c, 1, 3, 1, 1)]
        self.net = nn.Sequential(*mods)

    def forward(self, x):
        return self.net(x)
