"""The synthetic training pool: generated (image, mask) pairs waiting to be trained on.

The Generate dock adds pairs, the Train dock offers them next to the real layers with
a real:synthetic mixing ratio, and ``cellgen synth`` / ``--synthetic DIR`` use the same
folder format (``images.tif`` + ``masks.tif``, one pair per page).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

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

    def pairs(self) -> list[tuple]:
        """``(image_stack, mask_stack, None)`` triples for :func:`train_segmenter`'s ``synthetic``."""
        return [(e.images, e.masks, list(range(len(e.images)))) for e in self.entries]

    def connect(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def disconnect(self, callback: Callable[[], None]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def _emit(self) -> None:
        for cb in list(self._listeners):
            cb()


POOL = TrainingPool()


def read_synthetic_dir(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a synthetic set written by ``cellgen synth`` (images.tif + masks.tif)."""
    import tifffile

    folder = Path(folder)
    img_p, msk_p = folder / "images.tif", folder / "masks.tif"
    if not img_p.is_file() or not msk_p.is_file():
        raise ValueError(f"{folder} is not a synthetic set: expected images.tif and masks.tif in it "
                         "(make one with `cellgen synth -o DIR --n N`)")
    images, masks = tifffile.imread(img_p), tifffile.imread(msk_p)
    if images.ndim == 2:
        images, masks = images[None], masks[None]
    if images.shape != masks.shape:
        raise ValueError(f"{folder}: images {images.shape} and masks {masks.shape} do not match")
    return images, masks
