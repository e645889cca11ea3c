"""Streaming U-Net inference over 2D images and ZYX stacks of any size."""

from __future__ import annotations

from collections.abc import Generator

import numpy as np

from .._progress import Progress
from .preprocess import context_indices, normalize, resize, scaled_shape
from .tiling import predict_plane


def pick_device(device: str = "auto") -> str:
    import torch

    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA GPU; use --device cpu or auto")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' was asked for but is not available here; use --device cpu or auto")
    if device not in ("cpu", "cuda", "mps") and not device.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda or mps")
    return device


def check_image(image) -> None:
    """Raise a clear ValueError for inputs the segmenter cannot take."""
    shape = tuple(getattr(image, "shape", ()))
    dtype = np.dtype(getattr(image, "dtype", np.float64))
    if len(shape) not in (2, 3):
        hint = " (it looks like RGB: convert it to grayscale first)" if shape and shape[-1] in (3, 4) else ""
        raise ValueError(f"expected a 2D image (Y, X) or a stack (Z, Y, X), got shape {shape}{hint}")
    if len(shape) == 3 and shape[-1] in (3, 4) and shape[0] > 4:
        raise ValueError(f"shape {shape} looks like an RGB(A) image: convert it to grayscale first")
    if 0 in shape:
        raise ValueError(f"the image is empty (shape {shape})")
    if dtype.kind not in "uif" and dtype.kind != "b":
        raise ValueError(f"the image must be numeric, got dtype {dtype}")


# test-time augmentation: the flips whose (un-flipped) logits are averaged, by number of views
TTA_VIEWS = {1: ((),), 2: ((), (-2, -1)), 4: ((), (-1,), (-2,), (-2, -1))}


def tta_views(tta) -> int:
    """Number of views from ``tta``: 1, 2 (image + 180° rotation) or 4 (the four flips).

    ``True``/``False`` (the old on/off switch) mean 4 and 1.
    """
    if tta is True or tta is False or tta is None:
        return 4 if tta else 1
    try:
        views = int(tta) if float(tta) == int(float(tta)) else -1  # 2.5 is not a number of views
    except (TypeError, ValueError, OverflowError):
        views = -1
    if views not in TTA_VIEWS:
        raise ValueError(f"test-time augmentation takes 1, 2 or 4 views, got {tta!r}")
    return views


def make_forward(model, device: str = "cpu", tta=1):
    """Wrap ``model`` as a numpy batch -> sigmoid probability function under inference_mode.

    ``tta``: views whose logits are averaged (:func:`tta_views`): 1 = the image as is,
    2 = also its 180° rotation (2x the compute), 4 = the four flips (4x). Averaging
    views steadies the model's yes/no on ambiguous objects (README, "Measured").
    """
    import torch

    views = TTA_VIEWS[tta_views(tta)]

    def fn(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(device)
            if x.device.type == "cpu":  # oneDNN's fast path (flips keep this layout)
                x = x.contiguous(memory_format=torch.channels_last)
            if len(views) == 1:
                return torch.sigmoid(model(x))[:, 0].float().cpu().numpy()
            acc = 0
            for dims in views:
                xi = x.flip(dims) if dims else x
                yi = model(xi)
                acc = acc + (yi.flip(dims) if dims else yi)
            return torch.sigmoid(acc / len(views))[:, 0].float().cpu().numpy()

    return fn


UPSAMPLE = ("probability", "logit")


def upsample_probs(prob: np.ndarray, shape: tuple[int, int], how: str = "probability") -> np.ndarray:
    """Bilinear resize of model-resolution probabilities to ``shape``, clipped to [0, 1].

    ``how="logit"`` interpolates the logits instead (each pixel's probability mapped back through
    the inverse sigmoid, then the sigmoid again), so the 0.5 contour follows the network's zero
    crossing rather than a straight line between two probabilities.
    """
    if how not in UPSAMPLE:
        raise ValueError(f"upsample must be one of {UPSAMPLE}, got {how!r}")
    if tuple(prob.shape[-2:]) == tuple(shape):
        return np.clip(prob, 0.0, 1.0)
    if how == "logit":
        p = np.clip(prob, 1e-6, 1 - 1e-6, dtype=np.float32)
        lg = resize(np.log(p) - np.log1p(-p), shape, "bilinear")
        return (1.0 / (1.0 + np.exp(-lg))).astype(np.float32)
    out = resize(prob, shape, "bilinear")
    return np.clip(out, 0.0, 1.0, out=out)


def predict_stack(
    model,
    card: dict,
    image,
    out=None,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int = 4,
    device: str = "cpu",
    tta=1,
    zs: range | None = None,
    independent: bool = False,
    upsample: str = "probability",
) -> Generator[Progress, None, np.ndarray]:
    """Foreground probabilities for a (Y, X) image or (Z, Y, X) stack.

    ``image`` may be any lazily indexable array (numpy, memmap, dask, zarr);
    ``out`` (same shape, float32 or uint8 = probability*255) is filled slice by
    slice; if omitted a float32 array is allocated. Yields progress per batch of
    tiles; stop by closing the generator.

    ``zs`` (a range of slice indices of a stack) predicts only those slices, with
    their context slices read from ``image`` as usual; ``out`` then holds
    ``len(zs)`` slices, ``out[i]`` for slice ``zs[i]`` (used by the blockwise path).

    ``independent=True`` treats the slices as separate images (a tile set, generated
    samples): each slice's context channels are the slice itself, as for a 2D image,
    never its unrelated neighbours (:mod:`.slices`).

    ``upsample``: how the model-resolution result is brought back to the image's pixels
    (:func:`upsample_probs`).
    """
    check_image(image)
    is2d = image.ndim == 2
    n = 1 if is2d else image.shape[0]
    hw = image.shape[-2:]
    zs = range(n) if (zs is None or is2d) else zs
    if zs.step != 1 or zs.start < 0 or zs.stop > n:
        raise ValueError(f"zs must be a contiguous range of slices within 0..{n}, got {zs}")
    want = tuple(image.shape) if is2d else (len(zs), *hw)
    if out is None:
        out = np.zeros(want, np.float32)
    if tuple(out.shape) != want:
        raise ValueError(f"output shape {out.shape} differs from the expected shape {want}")
    k = int(card.get("context", 0))
    scale = float(card.get("scale", 1.0))
    norm = card.get("normalization", {})
    tile = int(tile or card.get("tile", 256))
    overlap = int(card.get("overlap", 32) if overlap is None else overlap)
    divisor = 2 ** int(card["architecture"].get("depth", 0))
    small = scaled_shape(hw, scale)
    fn = make_forward(model, device, tta)
    cache: dict[int, np.ndarray] = {}

    def plane(z: int) -> np.ndarray:
        if z not in cache:
            raw = np.asarray(image if is2d else image[z])
            img = normalize(raw, norm.get("low", 1.0), norm.get("high", 99.0))
            cache[z] = resize(img, small, "area")
        return cache[z]

    # tiles per slice, for an overall progress count
    from .tiling import tile_layout

    per = -(-len(tile_layout(*small, tile, overlap, divisor)[2]) // batch_size)
    total = per * len(zs)
    done = 0
    for j, z in enumerate(zs):
        idx = [z] * (2 * k + 1) if independent else context_indices(z, n, k)
        for key in list(cache):
            if key not in idx:
                del cache[key]
        stack = np.stack([plane(i) for i in idx])
        gen = predict_plane(fn, stack, tile, overlap, batch_size, divisor)
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                prob = stop.value
                break
            done += 1
            yield Progress(min(done, total), total, "segment")
        prob = upsample_probs(prob, hw, upsample)
        if np.dtype(out.dtype) == np.uint8:
            prob = np.round(prob * 255).astype(np.uint8)
        if is2d:
            out[...] = prob
        else:
            out[j] = prob
    return out
