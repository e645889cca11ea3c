"""A read-on-demand stack of 2D planes, and RGB → grayscale conversion.

``LazyStack`` is the small array-like that napari (and the segmenter) index when a
stack is too large to hold in memory and cannot be memory-mapped (compressed TIFF,
folders of PNG slices): it has ``shape``, ``dtype``, ``ndim`` and ``__getitem__`` and
reads only the planes a key touches.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from math import prod

import numpy as np

# ITU-R BT.709 luma, as skimage.color.rgb2gray
_LUMA = np.array([0.2125, 0.7154, 0.0721])


def to_gray(rgb: np.ndarray, channel_axis: int = -1) -> np.ndarray:
    """Luminance of an RGB(A) array (alpha ignored), in the input's dtype."""
    rgb = np.moveaxis(np.asarray(rgb), channel_axis, -1)[..., :3]
    gray = rgb.astype(np.float32) @ _LUMA.astype(np.float32)
    dtype = rgb.dtype
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return np.clip(np.rint(gray), info.min, info.max).astype(dtype)
    if dtype.kind == "b":
        return gray >= 0.5
    return gray.astype(dtype if dtype.itemsize >= 4 else np.float32)


class LazyStack:
    """An N-D array whose last two axes are the planes returned by ``read_plane(i)``.

    ``i`` is the flat (C-order) index over the leading axes. Indexing reads just the
    planes it needs; ``reads`` counts planes read, which tests use to prove laziness.
    """

    def __init__(self, shape, dtype, read_plane: Callable[[int], np.ndarray], name: str = ""):
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) < 2:
            raise ValueError("a LazyStack needs at least two axes")
        self.dtype = np.dtype(dtype)
        self._read_plane = read_plane
        self._lock = threading.Lock()  # file handles are not thread safe
        self.name = name
        self.reads = 0

    # array-like protocol -------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"LazyStack(shape={self.shape}, dtype={self.dtype}, name={self.name!r})"

    def plane(self, i: int) -> np.ndarray:
        with self._lock:
            arr = np.asarray(self._read_plane(int(i)))
            self.reads += 1
        if arr.shape != self.shape[-2:]:
            raise ValueError(
                f"{self.name or 'stack'}: plane {i} has shape {arr.shape}, expected {self.shape[-2:]}"
            )
        return arr.astype(self.dtype, copy=False)

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is None for k in key):
            raise IndexError("LazyStack does not support np.newaxis")
        if any(k is Ellipsis for k in key):
            i = next(i for i, k in enumerate(key) if k is Ellipsis)
            fill = (slice(None),) * (self.ndim - len(key) + 1)
            key = key[:i] + fill + key[i + 1 :]
        key = key + (slice(None),) * (self.ndim - len(key))
        if len(key) > self.ndim:
            raise IndexError(f"too many indices for an array of {self.ndim} dimensions")
        nlead = self.ndim - 2
        lead_key, plane_key = key[:nlead], key[nlead:]
        lead_key = tuple(np.asarray(k) if isinstance(k, list) else k for k in lead_key)
        index = np.arange(prod(self.shape[:nlead]), dtype=np.int64).reshape(self.shape[:nlead])
        picked = index[lead_key] if nlead else np.asarray(0)
        flat = picked.ravel()
        first = self.plane(int(flat[0]))[plane_key] if flat.size else None
        if first is None:  # an empty selection: shape it with a zero-plane probe
            probe = np.empty(self.shape[-2:], self.dtype)[plane_key]
            return np.empty(picked.shape + probe.shape, self.dtype)
        out = np.empty(picked.shape + first.shape, self.dtype)
        out_flat = out.reshape((flat.size, *first.shape))
        out_flat[0] = first
        for j, i in enumerate(flat[1:], start=1):
            out_flat[j] = self.plane(int(i))[plane_key]
        return out

    def __array__(self, dtype=None, copy=None):
        arr = self[...]
        return arr if dtype is None else arr.astype(dtype, copy=False)

    def astype(self, dtype, copy=True):
        return np.asarray(self).astype(dtype, copy=copy)
