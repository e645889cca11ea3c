"""The synthetic training pool: generated (image, mask) pairs waiting to be trained on.

The Generate dock adds pairs, the Train dock offers them next to the real layers with
a real:synthetic mixing ratio. ``cellgen synth`` / ``cellgen train --synthetic DIR`` are the
command-line counterparts (:mod:`napari_cellgen.generate.synth`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class PoolEntry:
    images: np.ndarray  # (N, H, W) uint8
    masks: np.ndarray  # (N, H, W) labels, 0 = background
    source: str = ""


@dataclass
class TrainingPool:
    entries: list[PoolEntry] = field(default_factory=list)
    _listeners: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def add(self, images, masks, source: str = "") -> None:
        images, masks = np.asarray(images), np.asarray(masks)
        if images.ndim == 2:
            images, masks = images[None], masks[None]
        if images.shape != masks.shape:
            raise ValueError(f"images {images.shape} and masks {masks.shape} must have the same shape")
        self.entries.append(PoolEntry(images, masks, source))
        self._emit()

    def clear(self) -> None:
        self.entries.clear()
        self._emit()

    def __len__(self) -> int:
        return sum(len(e.images) for e in self.entries)

    def arrays(self) -> tuple[np.ndarray, np.ndarray] | None:
        """All pairs as ``(images, masks)`` for :func:`train_segmenter`'s ``synthetic``; None if empty.

        Pairs of different sizes cannot be stacked: they are cropped to the smallest size.
        """
        if not self.entries:
            return None
        h = min(e.images.shape[-2] for e in self.entries)
        w = min(e.images.shape[-1] for e in self.entries)
        images = np.concatenate([e.images[:, :h, :w] for e in self.entries])
        masks = np.concatenate([e.masks[:, :h, :w] for e in self.entries])
        return images, masks

    def connect(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def disconnect(self, callback: Callable[[], None]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def _emit(self) -> None:
        for cb in list(self._listeners):
            cb()


POOL = TrainingPool()

