"""What a model gets right and wrong on training regions: validation IoU and the pixels to fix."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .data import Region


def _region_probs(model, regions: Sequence[Region], card: dict, device: str = "cpu", batch_size: int = 4):
    """The model's foreground probability over each region (model resolution), in eval mode."""
    from .._progress import run
    from ..segment.predict import make_forward
    from ..segment.tiling import predict_plane

    model.eval()
    fn = make_forward(model, device)
    divisor = 2 ** int(card["architecture"]["depth"])
    try:
        for r in regions:
            yield r, run(predict_plane(fn, r.planes, card["tile"], card["overlap"], batch_size, divisor))
    finally:
        model.train()


def evaluate(model, regions: Sequence[Region], card: dict, device: str = "cpu", batch_size: int = 4) -> float:
    """Foreground IoU (threshold 0.5) over validation regions at model resolution."""
    from ..metrics import IoU

    iou = IoU()
    for r, prob in _region_probs(model, regions, card, device, batch_size):
        iou.add(prob >= 0.5, r.mask >= 0.5)
    return iou.value


def hard_pixels(model, regions: Sequence[Region], card: dict, device: str = "cpu",
                erode: bool = True) -> list[np.ndarray]:
    """Where the model is wrong on each training region, ignoring one-pixel slivers along edges.

    A 3x3 erosion of the error map keeps false objects (look-alikes such as
    multivesicular bodies) and thick misses, and drops the thin boundary
    disagreements that are as much annotation noise as model error. ``erode=False``
    keeps every wrong pixel: for a user's corrections, where a missed rim a few pixels
    wide (one or two at model resolution) is exactly what was painted.
    """
    from scipy import ndimage as ndi

    out = []
    for r, prob in _region_probs(model, regions, card, device):
        wrong = (prob >= 0.5) != (r.mask >= 0.5)
        out.append(ndi.binary_erosion(wrong) if erode else wrong)
    return out
