"""Foreground IoU, defined once for the training loop, the benchmarks and the tests.

Convention: two empty masks agree perfectly (IoU 1.0); counts can be pooled over slices or
regions with :class:`IoU` (sum of intersections / sum of unions, not a mean of ratios).
"""

from __future__ import annotations

import numpy as np


class IoU:
    """Pooled foreground IoU: ``add(pred, truth)`` per slice or region, then ``value``."""

    def __init__(self):
        self.inter = 0
        self.union = 0

    def add(self, pred, truth) -> float:
        """Add one pair of masks (anything > 0 / True is foreground); returns that pair's own IoU."""
        p, t = np.asarray(pred) > 0, np.asarray(truth) > 0
        i, u = int(np.logical_and(p, t).sum()), int(np.logical_or(p, t).sum())
        self.inter += i
        self.union += u
        return i / u if u else 1.0

    @property
    def value(self) -> float:
        return self.inter / self.union if self.union else 1.0


def foreground_iou(pred, truth) -> float:
    """IoU of the foregrounds (> 0) of two masks of one shape; 1.0 when both are empty."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"masks of different shapes: {pred.shape} and {truth.shape}")
    m = IoU()
    m.add(pred, truth)
    return m.value
