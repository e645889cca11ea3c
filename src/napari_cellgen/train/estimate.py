"""How long will a training run take here? One measured step, before the run starts.

The Train dock says "about N min on this machine" before a fine-tuning starts (issue 14: one
click started 300 steps x batch 8 with no warning). A step of the real network at the run's
patch size is timed on random data (after one warm-up step); time grows about linearly with the
batch (MACHINE.md: 161 / 640 / 2,900 ms for batch 8 at 64² / 128² / 256², i.e. with pixels), so a
batch of two is timed and scaled. Costs a fraction of a second for the shipped model on a CPU.
"""

from __future__ import annotations

import time
from dataclasses import replace

_CACHE: dict[tuple, float] = {}


def seconds_per_step(cfg, device: str = "cpu") -> float:
    """Measured seconds of one optimisation step of ``cfg`` (a :class:`~.loop.TrainConfig`)."""
    import torch

    from .loop import _fast_layout, _init_model, _logits

    key = (str(cfg.init), cfg.base, cfg.depth, cfg.context, cfg.patch, cfg.batch, cfg.precision, device,
           torch.get_num_threads())
    if key in _CACHE:
        return _CACHE[key]
    model, card = _init_model(replace(cfg, rescale=None, recontext=None))
    _fast_layout(torch, model.to(device), device).train()  # as the loop trains it
    channels = 2 * int(card.get("context", 0)) + 1
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    gen = torch.Generator().manual_seed(0)

    def step(b: int) -> float:
        x = _fast_layout(torch, torch.rand(b, channels, cfg.patch, cfg.patch, generator=gen).to(device), device)
        y = (torch.rand(b, 1, cfg.patch, cfg.patch, generator=gen) > 0.5).float().to(device)
        t0 = time.perf_counter()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(_logits(torch, model, x, device, cfg.precision), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    step(1)  # warm-up: allocator, oneDNN kernels
    b = min(2, int(cfg.batch))
    _CACHE[key] = step(b) * int(cfg.batch) / b
    return _CACHE[key]


def describe(seconds: float) -> str:
    """'about 40 s' / 'about 12 min' / 'about 1.5 h'."""
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"
