"""What ``cellgen train`` and the Train dock share around the training loop: the recipes of a run
(learning rate, patch size at the model's scale, the "fine-tune on my corrections" recipe), where a
named run keeps its checkpoints, and :func:`train_model`, the job both run (a polite stop, then
registration of the result). The loop itself is :mod:`.loop`.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._progress import Progress, stoppable
from .data import DataError

if TYPE_CHECKING:  # loop.py re-exports this module: import it lazily, in the functions
    from .loop import TrainConfig


def base_model_info(init: str | None, cfg: TrainConfig | None = None) -> dict:
    """``scale`` and ``depth`` a run starting from ``init`` will use (reads only the card)."""
    from ..models.store import read_card, resolve
    from .loop import TrainConfig

    cfg = cfg or TrainConfig()
    if init in (None, "", "scratch"):
        return {"scale": cfg.scale, "depth": cfg.depth, "name": "scratch"}
    card = read_card(resolve(init))
    return {
        "scale": float(card.get("scale", 1.0)),
        "depth": int(card["architecture"]["depth"]),
        "name": card.get("name", str(init)),
    }


# "Fine-tune on my corrections": what the Train dock's button and ``cellgen train --corrections`` use.
# Measured by benchmarks/correction_loop.py (docs/benchmarks.md): few painted slices, no validation,
# the last weights kept, the pixels the starting model got wrong weighted and sampled more.
CORRECTIONS = {"steps": 400, "batch": 8, "patch_px": 256, "emphasis": 8.0, "edge_weight": 8.0, "hard_prob": 0.4,
               "fg_prob": 0.3, "anchor_share": 0.35}
MAX_ANCHOR_SLICES = 8


def correction_data(image, labels, painted: Sequence[int]):
    """``(pairs, anchors)`` for fine-tuning on the ``painted`` slices of a labels stack.

    Anchors: up to :data:`MAX_ANCHOR_SLICES` unpainted slices with labels, spread through the stack.
    """
    painted = sorted({int(z) for z in painted})
    pairs = [(image, labels, painted)]
    if getattr(labels, "ndim", 2) != 3:
        return pairs, None
    rest = [z for z in range(labels.shape[0]) if z not in painted and np.any(np.asarray(labels[z]))]
    if not rest:
        return pairs, None
    pick = sorted({rest[int(i)] for i in np.linspace(0, len(rest) - 1, min(MAX_ANCHOR_SLICES, len(rest))).round()})
    return pairs, [(image, labels, pick)]


def corrections_config(init: str, name: str = "", **overrides) -> TrainConfig:
    """The fine-tuning recipe for a few corrected slices, starting from the model ``init``."""
    from .loop import TrainConfig

    c = {**CORRECTIONS, **{k: v for k, v in overrides.items() if v is not None}}
    info = base_model_info(init)
    return TrainConfig(
        init=init, steps=int(c["steps"]), batch=int(c["batch"]), lr=float(c.get("lr") or default_lr(init)),
        patch=patch_at_model_scale(int(c["patch_px"]), info["scale"], info["depth"]),
        val_fraction=0.0, val_every=10**9, select="last", ema=0.0,
        emphasis=float(c["emphasis"]), hard_prob=float(c["hard_prob"]), fg_prob=float(c["fg_prob"]),
        anchor_share=float(c["anchor_share"]), edge_weight=float(c.get("edge_weight", 0.0)),
        seed=int(c.get("seed", 0)), name=name,
        notes={"base_model": info["name"], "recipe": "corrections"},
    )


def patch_at_model_scale(patch_px: int, scale: float, depth: int) -> int:
    """A patch of ``patch_px`` input pixels at model resolution, a multiple of ``2**depth``."""
    d = 2 ** int(depth)
    if patch_px <= 0:
        raise DataError(f"the patch size must be positive, got {patch_px}")
    return max(d, int(round(patch_px * scale / d)) * d)


def default_lr(init: str | None) -> float:
    """2e-3 from scratch, 5e-4 when fine-tuning (a pretrained model forgets less)."""
    return 2e-3 if init in (None, "", "scratch") else 5e-4


def train_model(
    pairs: Sequence[tuple],
    out_dir: str | Path,
    cfg: TrainConfig | None = None,
    *,
    val_pairs: Sequence[tuple] | None = None,
    resume: bool = False,
    device: str = "cpu",
    register_as: str | None = None,
    stop=None,
    synthetic: tuple | None = None,
    anchors: Sequence[tuple] | None = None,
) -> Generator[Progress, None, dict]:
    """:func:`train_segmenter`, plus a polite stop and registration of the result.

    ``stop`` is a callable (e.g. ``threading.Event().is_set``) checked before
    each step: when it returns True the training generator is closed *in the
    calling thread*, which writes the best checkpoint, and the job returns
    normally with ``stopped=True``. If ``register_as`` is given, the best model
    (finished or stopped) is copied into the user models folder under that name.

    Returns ``{"card", "model_dir", "registered", "stopped", "step"}``;
    ``model_dir``/``card`` are None if it was stopped before the first step.
    """
    from ..models.store import read_card, register_model
    from .loop import train_segmenter

    out_dir = Path(out_dir)
    gen = train_segmenter(pairs, out_dir, cfg, val_pairs=val_pairs, resume=resume, device=device,
                          synthetic=synthetic, anchors=anchors)
    # on stop, closing the generator evaluates and writes the best checkpoint if none was written
    stopped, card, last = yield from stoppable(gen, stop)
    step = last.done if last is not None else 0
    written = (out_dir / "model.safetensors").is_file() and (out_dir / "card.json").is_file()
    if card is None and written:
        card = read_card(out_dir)
    registered = register_model(out_dir, register_as) if (register_as and written) else None
    return {
        "card": card,
        "model_dir": out_dir if written else None,
        "registered": registered,
        "stopped": stopped,
        "step": step,
    }


def default_run_dir(name: str) -> Path:
    """Where a named run keeps its checkpoints (``last/`` is resumable) before registration."""
    from ..registry import safe_name, user_data_dir

    return user_data_dir() / "training-runs" / safe_name(name, "run")  # never outside that folder
