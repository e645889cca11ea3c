"""Probability -> mask -> instance labels, streaming slice by slice.

3D instance labelling is done with per-slice 2D labelling plus a union-find over
overlapping objects of neighbouring slices: exactly face-connectivity in 3D, but
with memory bounded by one slice (the label volume may be a memmap or zarr).
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np
from scipy import ndimage as ndi

from .._progress import Progress


def prob_to_mask(prob: np.ndarray, threshold: float = 0.5, fill_holes: bool = True) -> np.ndarray:
    """Threshold a 2D probability map (float in [0, 1] or uint8 0-255) and fill holes."""
    prob = np.asarray(prob)
    t = threshold * 255 if prob.dtype == np.uint8 else threshold
    mask = prob >= t
    if fill_holes and mask.any():
        mask = ndi.binary_fill_holes(mask)
    return mask


class _UnionFind:
    def __init__(self):
        self.parent = np.arange(1, dtype=np.int64)
        self.size = np.zeros(1, dtype=np.int64)

    def grow(self, n: int, sizes: np.ndarray) -> int:
        start = len(self.parent)
        self.parent = np.concatenate([self.parent, np.arange(start, start + n)])
        self.size = np.concatenate([self.size, sizes.astype(np.int64)])
        return start

    def find(self, a: int) -> int:
        p = self.parent
        root = a
        while p[root] != root:
            root = p[root]
        while p[a] != root:
            p[a], a = root, p[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if ra > rb:
                ra, rb = rb, ra
            self.parent[rb] = ra
            self.size[ra] += self.size[rb]

    def roots(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


def split_touching(mask: np.ndarray, min_distance: int = 10) -> np.ndarray:
    """Watershed on the distance transform: split touching objects of a 2D mask."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    dist = ndi.distance_transform_edt(mask)
    lab, _ = ndi.label(mask)
    peaks = peak_local_max(dist, min_distance=min_distance, labels=lab, exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-dist, markers, mask=mask)


def label_stack(
    prob,
    out,
    *,
    threshold: float = 0.5,
    min_size: int = 0,
    fill_holes: bool = True,
    mode: str = "3d",
    split: bool = False,
    median: bool = False,
) -> Generator[Progress, None, int]:
    """Instance labels from probabilities (Y, X) or (Z, Y, X) into ``out`` (uint32-like).

    ``mode="3d"``: an object keeps one id through the stack (face connectivity).
    ``mode="2d"``: objects are labelled per slice (ids stay unique over the stack).
    ``min_size`` is in pixels (2D) or voxels (3D objects). ``median`` applies a
    3×3×3 median filter to the probabilities first. Returns the number of objects.
    """
    if mode not in ("2d", "3d"):
        raise ValueError(f"mode must be '2d' or '3d', got {mode!r}")
    is2d = prob.ndim == 2
    n = 1 if is2d else prob.shape[0]

    def get(arr, z):
        return np.asarray(arr if is2d else arr[z])

    def put(z, val):
        if is2d:
            out[...] = val
        else:
            out[z] = val

    def slice_mask(z):
        p = get(prob, z)
        if median and not is2d:
            lo, hi = max(0, z - 1), min(n, z + 2)
            p = ndi.median_filter(np.asarray(prob[lo:hi]), size=3, mode="nearest")[z - lo]
        elif median:
            p = ndi.median_filter(p, size=3, mode="nearest")
        m = prob_to_mask(p, threshold, fill_holes)
        return m

    if np.dtype(out.dtype).kind not in "iu" or np.dtype(out.dtype).itemsize < 4:
        raise ValueError(f"the label output must be a 32- or 64-bit integer array, got {out.dtype}")
    uf = _UnionFind()
    prev = None
    for z in range(n):
        mask = slice_mask(z)
        if split:
            lab = split_touching(mask).astype(np.int64)
            k = int(lab.max())
        else:
            lab, k = ndi.label(mask)
            lab = lab.astype(np.int64)
        sizes = np.bincount(lab.ravel(), minlength=k + 1)[1:]
        off = uf.grow(k, sizes) - 1
        glob = np.where(lab > 0, lab + off, 0)
        if mode == "3d" and prev is not None and k:
            both = (glob > 0) & (prev > 0)
            if both.any():
                keys = np.unique(prev[both].astype(np.int64) << 32 | glob[both].astype(np.int64))
                for key in keys.tolist():
                    uf.union(key >> 32, key & 0xFFFFFFFF)
        if glob.max(initial=0) > np.iinfo(np.dtype(out.dtype)).max:
            raise ValueError(f"too many objects for a {out.dtype} label array")
        put(z, glob)
        prev = glob
        yield Progress(z + 1, 2 * n, "label")
    # second pass: compact ids, drop small objects
    roots = uf.roots()
    sizes = np.zeros(len(roots), np.int64)
    np.add.at(sizes, roots, uf.size)
    keep = (sizes >= max(min_size, 1)) & (np.arange(len(roots)) > 0)
    keep_roots = np.nonzero(keep)[0]
    if keep_roots.size and keep_roots.size >= np.iinfo(np.dtype(out.dtype)).max:
        raise ValueError(f"{keep_roots.size} objects do not fit in {out.dtype}; use a wider label dtype")
    new_id = np.zeros(len(roots), np.int64)
    new_id[keep_roots] = np.arange(1, len(keep_roots) + 1)
    lut = new_id[roots]
    for z in range(n):
        put(z, lut[get(out, z)].astype(out.dtype))
        yield Progress(n + z + 1, 2 * n, "label")
    return int(len(keep_roots))
