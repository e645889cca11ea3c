"""An exponential moving average of a model's weights (the segmenter and the generator's denoiser)."""

from __future__ import annotations


def ema_decay(decay: float, step: int) -> float:
    """``decay``, ramped up over the first steps so that a short run is not dominated by its start."""
    return min(decay, (1 + step) / (10 + step))


def ema_update(ema, model, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * model`` for parameters and float buffers (batch-norm statistics);
    integer buffers (batch counters) are copied."""
    import torch

    with torch.no_grad():
        for pe, p in zip(ema.parameters(), model.parameters(), strict=True):
            pe.lerp_(p, 1.0 - decay)
        for be, b in zip(ema.buffers(), model.buffers(), strict=True):
            if be.is_floating_point():
                be.lerp_(b, 1.0 - decay)
            else:
                be.copy_(b)
