"""Tiny image/mask stacks shared by the segmenter-training tests."""

from __future__ import annotations

import numpy as np


def blob_stack(n: int = 4, size: int = 64, seed: int = 0, radius: int = 7, margin: int = 10, fg: int = 255):
    """(image, mask) uint8 stacks: three dark disks per slice on a bright noisy background; mask 0/``fg``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    img = np.empty((n, size, size), np.uint8)
    mask = np.zeros((n, size, size), np.uint8)
    for z in range(n):
        m = np.zeros((size, size), bool)
        for _ in range(3):
            cy, cx = rng.integers(margin, size - margin, 2)
            m |= (yy - cy) ** 2 + (xx - cx) ** 2 <= radius * radius
        mask[z] = m * fg
        img[z] = np.clip(180 - 100 * m + rng.normal(0, 10, m.shape), 0, 255).astype(np.uint8)
    return img, mask
