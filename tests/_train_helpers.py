"""Tiny image/mask stacks shared by the segmenter-training tests."""

from __future__ import annotations

import numpy as np


def blob_stack(n: int = 4, size: int = 64, seed: int = 0, radius=7, margin: int = 10, fg: int = 255,
               blobs: int = 3, contrast: float = 100.0, noise: float = 10.0):
    """(image, mask) uint8 stacks: dark disks on a bright noisy background; mask 0/``fg``.

    ``radius`` is an int, or a (low, high) range drawn per disk.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    img = np.empty((n, size, size), np.uint8)
    mask = np.zeros((n, size, size), np.uint8)
    for z in range(n):
        m = np.zeros((size, size), bool)
        for _ in range(blobs):
            cy, cx = rng.integers(margin, size - margin, 2)
            r = rng.integers(*radius) if isinstance(radius, tuple) else radius
            m |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        mask[z] = m * fg
        img[z] = np.clip(180 - contrast * m + rng.normal(0, noise, m.shape), 0, 255).astype(np.uint8)
    return img, mask


SQUARE = (slice(70, 86), slice(8, 24))  # a dark look-alike: a disk-trained model calls it a mitochondrion
STRIPES = (slice(8, 24), slice(70, 86))  # a striped mitochondrion such a model misses


def correction_scene(seed: int = 0):
    """(image, mask) of dark disks plus, on every slice, the two mistakes a user corrects."""
    img, mask = blob_stack(4, 96, seed, radius=(6, 10), margin=14, blobs=3, contrast=110, noise=8)
    img[(slice(None), *SQUARE)] = 60
    img[(slice(None), *STRIPES)] = np.where(np.arange(16) % 4 < 2, 130, 230)[None, None, :]
    mask[(slice(None), *SQUARE)] = 0
    mask[(slice(None), *STRIPES)] = 0
    return img, mask


def train_disk_model(out_dir, register_as=None):
    """A small U-Net that has learnt dark disks (and nothing of squares or stripes)."""
    from napari_cellgen._progress import run
    from napari_cellgen.train.loop import TrainConfig, train_model

    img, mask = blob_stack(4, 96, 1, radius=(6, 10), margin=14, blobs=3, contrast=110, noise=8)
    cfg = TrainConfig(steps=150, scale=1.0, context=0, base=8, depth=2, patch=48, batch=8, val_every=10**9,
                      tile=96, overlap=16, lr=1e-2, elastic_p=0.0, val_fraction=0.0, threads=1)
    return run(train_model([(img, mask, None)], out_dir, cfg, register_as=register_as))
