"""Is a (Z, Y, X) stack a volume, or a pile of unrelated 2D images?

The 2.5D segmenter reads each slice with its neighbours as context. In a real volume the
neighbours are the same structures 5 nm further on; in a stack of generated tiles, a tile set or
a folder of separate micrographs they are other images, and the model, shown unrelated context,
segments next to nothing (issue 14: IoU 0.001 for 24 generated tiles, 0.84-0.96 one by one).

:func:`adjacent_correlation` compares neighbouring slices shrunk to about 32 px (block means,
so noise and small misalignment hardly matter) and z-scored; the median over up to 16 pairs
spread through the stack is the stack's score. Measured (``segment/slices.py`` docstring,
2026-12-03, Lucchi training volume, 165 x 768 x 1024 at 5 nm):

=========================================================  ===============  ===============
stack                                                      median           extreme pair
=========================================================  ===============  ===============
the Lucchi volume                                          0.995            min 0.990
a 256 x 256 crop of it, every 10th slice (50 nm sections)  0.41             min 0.29
24 random 256 x 256 tiles of it (other z, y, x), 5 draws   -0.06 ... 0.01   max 0.42
=========================================================  ===============  ===============

so :data:`THRESHOLD` = 0.25 sits well below thin-section volumes and far above unrelated tiles
(a median of 16 pairs; a stack of 2 or 3 slices has only 1-2 pairs and is judged less surely).
Unrelated images that share a strong common pattern (e.g. the same vignetting) would read as
a volume: choose ``slices="independent"`` (``--slices independent``, or ``--2d``) for those.
"""

from __future__ import annotations

import numpy as np

THRESHOLD = 0.25  # median adjacent-slice correlation below this = independent slices
CHOICES = ("auto", "volume", "independent")


def _small(plane, target: int = 32) -> np.ndarray:
    """``plane`` block-averaged to about ``target`` px on its longer side, z-scored (float64)."""
    s = np.asarray(plane, np.float64)
    f = max(1, max(s.shape) // target)
    h, w = (s.shape[0] // f) * f, (s.shape[1] // f) * f
    s = s[:h, :w].reshape(h // f, f, w // f, f).mean((1, 3))
    s = s - s.mean()
    sd = s.std()
    return s / sd if sd > 0 else s


def adjacent_correlation(image, pairs: int = 16) -> float:
    """Median Pearson correlation of neighbouring slices (downsampled), over up to ``pairs`` pairs.

    Reads at most ``2 * pairs`` slices, so it is cheap on lazy or memory-mapped stacks.
    NaN for a 2D image or a single slice.
    """
    if image.ndim != 3 or image.shape[0] < 2:
        return float("nan")
    n = int(image.shape[0])
    zs = np.unique(np.linspace(0, n - 2, min(pairs, n - 1)).round().astype(int))
    vals = [float((_small(image[z]) * _small(image[z + 1])).mean()) for z in zs]
    return float(np.median(vals))


def independent_slices(image, threshold: float = THRESHOLD) -> bool:
    """True when the slices of a (Z, Y, X) stack look unrelated (see the module docstring)."""
    c = adjacent_correlation(image)
    return bool(c == c and c < threshold)


def resolve(image, slices: str = "auto", mode: str = "3d") -> tuple[bool, str, str]:
    """``(independent, mode, message)`` for segmenting ``image``.

    - ``"independent"``: each slice is its own image: the model's context channels are the slice
      itself (as for a single 2D image) and labels are 2D.
    - ``"volume"``: context from the neighbouring slices, labels as ``mode`` says.
    - ``"auto"``: per-slice labels (``mode="2d"``) mean per-slice for the model too; otherwise a
      stack whose neighbours are unrelated (:func:`independent_slices`) is switched to
      independent, and ``message`` says so (empty when nothing was switched).
    """
    if slices not in CHOICES:
        raise ValueError(f"slices must be one of {', '.join(CHOICES)}, got {slices!r}")
    if image.ndim != 3 or image.shape[0] < 2:
        return False, mode, ""
    if slices == "independent":
        return True, "2d", ""
    if slices == "volume":
        return False, mode, ""
    if mode == "2d":
        return True, "2d", ""
    c = adjacent_correlation(image)
    if c == c and c < THRESHOLD:
        msg = (f"the {image.shape[0]} slices look like separate images (neighbouring slices correlate "
               f"{c:.2f}; a volume > {THRESHOLD}): each slice was segmented on its own "
               "(choose slices 'volume' to override)")
        return True, "2d", msg
    return False, mode, ""
