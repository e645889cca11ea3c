"""Mask-conditioned latent denoiser: a diffusers ``UNet2DModel`` with the mask as extra input channels.

The mask (full image resolution, 0/1) is folded onto the latent grid by space-to-depth
(``pixel_unshuffle`` by the VAE factor): a 256x256 mask becomes 64 channels of 32x32, so the
denoiser sees exact mitochondrion boundaries, not a blurred downsampled mask. Foreground is +1,
background -1; "no mask" (classifier-free guidance's null condition, and every slice whose mask
may not be used) is all zeros plus a flag channel at -1 (the flag is +1 when a mask is given).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def mask_condition(masks: torch.Tensor | None, factor: int, shape: tuple[int, int, int]) -> torch.Tensor:
    """Conditioning channels for a batch.

    ``masks``: (B, H, W) bool/0-1 tensor, or None for the null condition; ``shape`` is the
    latent batch shape (B, h, w). Returns (B, factor**2 + 1, h, w) float32.
    """
    b, h, w = shape
    if masks is None:
        cond = torch.zeros(b, factor * factor + 1, h, w)
        cond[:, -1] = -1.0
        return cond
    m = masks.float()[:, None] * 2.0 - 1.0
    if m.shape[-2:] != (h * factor, w * factor):
        raise ValueError(
            f"masks of shape {tuple(masks.shape[-2:])} do not match the latent grid {h}x{w}x{factor}"
        )
    cond = F.pixel_unshuffle(m, factor)
    return torch.cat([cond, torch.ones(b, 1, h, w, dtype=cond.dtype, device=cond.device)], 1)


def null_like(cond: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(cond)
    out[:, -1] = -1.0
    return out


class MaskDenoiser(nn.Module):
    """``forward(x_t, t, cond) -> prediction`` (epsilon or v, as its card says).

    Parameters
    ----------
    latent_channels : channels of the VAE latent
    factor : VAE downsampling factor (the mask is folded by it)
    block_out_channels, layers_per_block, attention_levels : the U-Net's size; attention is used at
        the levels whose index is in ``attention_levels`` (0 = the latent resolution)
    time_injection : how the sinusoidal timestep embedding enters every residual block:
        "scale_shift" (AdaGN, scale and shift after the GroupNorm), not diffusers' default additive
        bias, which the next GroupNorm removes whenever a group holds one channel (and partly
        otherwise) -- a denoiser blind to the timestep was the original project's bug.
    """

    def __init__(
        self,
        latent_channels: int = 4,
        factor: int = 8,
        block_out_channels: tuple[int, ...] = (64, 128, 192),
        layers_per_block: int = 1,
        attention_levels: tuple[int, ...] = (1, 2),
        attention_head_dim: int = 32,
        norm_num_groups: int = 32,
        time_injection: str = "scale_shift",
    ):
        super().__init__()
        from diffusers import UNet2DModel

        block_out_channels = tuple(int(c) for c in block_out_channels)
        attention_levels = tuple(int(a) for a in attention_levels)
        self.config = {
            "latent_channels": latent_channels,
            "factor": factor,
            "block_out_channels": list(block_out_channels),
            "layers_per_block": layers_per_block,
            "attention_levels": list(attention_levels),
            "attention_head_dim": attention_head_dim,
            "norm_num_groups": norm_num_groups,
            "time_injection": time_injection,
        }
        n = len(block_out_channels)
        down = tuple("AttnDownBlock2D" if i in attention_levels else "DownBlock2D" for i in range(n))
        up = tuple("AttnUpBlock2D" if i in attention_levels else "UpBlock2D" for i in reversed(range(n)))
        self.cond_channels = factor * factor + 1
        self.unet = UNet2DModel(
            in_channels=latent_channels + self.cond_channels,
            out_channels=latent_channels,
            down_block_types=down,
            up_block_types=up,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            attention_head_dim=attention_head_dim,
            norm_num_groups=norm_num_groups,
            time_embedding_type="positional",
            flip_sin_to_cos=True,
            freq_shift=0,
            resnet_time_scale_shift=time_injection,
        )

    @property
    def divisor(self) -> int:
        """Latent sides must be multiples of this."""
        return 2 ** (len(self.config["block_out_channels"]) - 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(t) or t.ndim == 0:
            t = torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)
        return self.unet(torch.cat([x, cond.to(x.dtype)], 1), t).sample
