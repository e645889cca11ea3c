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
