"""A small, configurable 2D U-Net (optionally 2.5D: neighbouring slices as channels)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class _ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """U-Net returning logits.

    Parameters
    ----------
    in_channels : input channels (1 for 2D, 2*k+1 for 2.5D with k neighbours each side)
    out_channels : output channels (1 = foreground logit)
    base : features of the first level, doubled at each level
    depth : number of poolings
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, base: int = 16, depth: int = 4):
        super().__init__()
        if depth < 1 or base < 1:
            raise ValueError("depth and base must be >= 1")
        self.config = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "base": base,
            "depth": depth,
        }
        feats = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        cin = in_channels
        for f in feats:
            self.down.append(_ConvBlock(cin, f))
            cin = f
        self.up = nn.ModuleList()
        self.upconv = nn.ModuleList()
        for f in reversed(feats[:-1]):
            self.upconv.append(nn.ConvTranspose2d(cin, f, 2, stride=2))
            self.up.append(_ConvBlock(2 * f, f))
            cin = f
        self.head = nn.Conv2d(cin, out_channels, 1)

    @property
    def divisor(self) -> int:
        """Spatial sizes must be multiples of this."""
        return 2 ** self.config["depth"]

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        return skips

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = self.encode(x)
        x = skips.pop()
        for upconv, block in zip(self.upconv, self.up, strict=False):
            x = upconv(x)
            x = block(torch.cat([x, skips.pop()], dim=1))
        return self.head(x)


def widen_context(model: UNet, old: int, new: int) -> UNet:
    """Give a 2.5D U-Net ``new`` neighbouring slices each side instead of ``old`` (in place).

    The first convolution's weights for the slices it already saw are kept and the
    further slices start at zero, so the widened network computes exactly what it
    did before; training then teaches it to use the extra context.
    """
    if not 0 <= old <= new:
        raise ValueError(f"the context can only grow (from {old} to {new} slices each side)")
    conv = model.down[0][0]
    if conv.in_channels != 2 * old + 1:
        raise ValueError(f"the model takes {conv.in_channels} channels, not the {2 * old + 1} of context {old}")
    wider = nn.Conv2d(2 * new + 1, conv.out_channels, conv.kernel_size, padding=conv.padding,
                      bias=conv.bias is not None)
    with torch.no_grad():
        wider.weight.zero_()
        wider.weight[:, new - old : new + old + 1] = conv.weight
        if conv.bias is not None:
            wider.bias.copy_(conv.bias)
    model.down[0][0] = wider
    model.config["in_channels"] = 2 * new + 1
    return model


def fuse_batchnorm(model: UNet) -> UNet:
    """Fold every BatchNorm into the preceding convolution (inference only, in place).

    Saves one memory pass per layer on CPU; the outputs match the eval-mode model
    to float precision.
    """
    model.eval()
    for block in [*model.down, *model.up]:
        layers = list(block)
        for i, layer in enumerate(layers):
            if isinstance(layer, nn.BatchNorm2d) and isinstance(layers[i - 1], nn.Conv2d):
                conv = layers[i - 1]
                with torch.no_grad():
                    std = torch.sqrt(layer.running_var + layer.eps)
                    w = layer.weight / std
                    # on the convolution's device: a model loaded onto a GPU stays there
                    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                                      padding=conv.padding, bias=True,
                                      device=conv.weight.device, dtype=conv.weight.dtype)
                    fused.weight.copy_(conv.weight * w.view(-1, 1, 1, 1))
                    bias = conv.bias if conv.bias is not None else torch.zeros_like(layer.running_mean)
                    fused.bias.copy_((bias - layer.running_mean) * w + layer.bias)
                block[i - 1] = fused
                block[i] = nn.Identity()
    return model
