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


def overlap_pairs(prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """(id in ``prev``, id in ``cur``) for every pair of objects that share a pixel (face connectivity)."""
    both = (prev > 0) & (cur > 0)
    if not both.any():
        return np.zeros((0, 2), np.int64)
    keys = np.unique(prev[both].astype(np.int64) << 32 | cur[both].astype(np.int64))
    return np.stack([keys >> 32, keys & 0xFFFFFFFF], axis=1)


def merge_ids(counts, sizes, pairs, min_size: int, dtype=np.uint32) -> tuple[list[np.ndarray], int]:
    """The one place where object ids are merged, filtered by size and made compact.

    Units (slices in memory, blocks of slices on a cluster) hold ``counts[i]`` local objects
    numbered 1..k, with voxel counts ``sizes[i]``; ``pairs[i]`` lists (local id in unit i,
    local id in unit i + 1) that touch. Returns one lookup table per unit (local id -> final
    id) and the number of objects. A merged object's size is the sum of its parts, counted
    once; final ids are compact and ordered by first appearance (unit, then local id);
    objects smaller than ``min_size`` voxels become 0. Raises ValueError when the objects do
    not fit in ``dtype``.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ks = np.asarray(counts, np.int64)
    offsets = np.concatenate([[0], np.cumsum(ks)])  # global id = offsets[i] + local id
    total = int(offsets[-1]) + 1
    allsizes = np.concatenate([[0], *[np.asarray(s, np.int64) for s in sizes]]).astype(np.int64)
    a_list, b_list = [], []
    for i, pr in enumerate(pairs):
        pr = np.asarray(pr, np.int64).reshape(-1, 2)
        if len(pr):
            a_list.append(pr[:, 0] + offsets[i])
            b_list.append(pr[:, 1] + offsets[i + 1])
    if a_list:
        a, b = np.concatenate(a_list), np.concatenate(b_list)
        graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(total, total))
        _, comp = connected_components(graph, directed=False)
    else:
        comp = np.arange(total)
    ncomp = int(comp.max()) + 1
    root = np.full(ncomp, total, np.int64)
    np.minimum.at(root, comp, np.arange(total))
    csize = np.bincount(comp, weights=allsizes, minlength=ncomp).astype(np.int64)
    keep = (csize >= max(int(min_size), 1)) & (root > 0)
    n_objects = int(keep.sum())
    if n_objects > np.iinfo(np.dtype(dtype)).max:
        raise ValueError(f"{n_objects} objects do not fit in {np.dtype(dtype)} labels; use a wider label dtype")
    order = np.argsort(root[keep], kind="stable")
    new = np.zeros(ncomp, np.int64)
    new[np.nonzero(keep)[0][order]] = np.arange(1, n_objects + 1)
    glob = new[comp]
    luts = []
    for i in range(len(ks)):
        lut = np.zeros(int(ks[i]) + 1, np.dtype(dtype))
        lut[1:] = glob[offsets[i] + 1 : offsets[i + 1] + 1]
        luts.append(lut)
    return luts, n_objects


def median_probs(prob: np.ndarray) -> np.ndarray:
    """The 3x3x3 (or 3x3) median of probabilities, repeating the edge slices: one definition for every path."""
    return ndi.median_filter(np.asarray(prob), size=3, mode="nearest")


def smooth_z_at(prob, z: int) -> np.ndarray:
    """Slice ``z`` of (Z, Y, X) probabilities averaged with its neighbours, weights 1/4, 1/2, 1/4
    (the edge slices stand in for missing neighbours), as floats in [0, 1] (uint8 input is
    probability x 255). Reads three slices: ``prob`` may be a memmap or zarr array."""
    n = prob.shape[0]
    a, b, c = (np.asarray(prob[min(max(i, 0), n - 1)]) for i in (z - 1, z, z + 1))
    scale = np.float32(1 / 255 if b.dtype == np.uint8 else 1.0)
    out = a.astype(np.float32)
    out += c
    out *= np.float32(0.25)
    out += np.float32(0.5) * b
    out *= scale
    return out


def smooth_z(prob) -> np.ndarray:
    """:func:`smooth_z_at` for every slice: one definition for the in-memory and blockwise paths."""
    return np.stack([smooth_z_at(prob, z) for z in range(prob.shape[0])])


def label_slice(mask: np.ndarray, split: bool = False) -> tuple[np.ndarray, int]:
    """2D instance labels (ids 1..k in raster order, or watershed order with ``split``) of one mask."""
    if split:
        lab = split_touching(mask)
        return lab, int(lab.max(initial=0))
    lab, k = ndi.label(mask)
    return lab, int(k)


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
    z_smooth: bool = False,
) -> Generator[Progress, None, int]:
    """Instance labels from probabilities (Y, X) or (Z, Y, X) into ``out`` (uint32-like).

    ``mode="3d"``: an object keeps one id through the stack (face connectivity).
    ``mode="2d"``: objects are labelled per slice (ids stay unique over the stack).
    ``min_size`` is in pixels (2D) or voxels (3D objects). ``median`` applies a
    3×3×3 median filter to the probabilities first; ``z_smooth`` averages each slice's
    probabilities with its neighbours' (:func:`smooth_z`; after the median when both are on,
    stacks only). Returns the number of objects.
    Each slice is labelled on its own, then :func:`merge_ids` joins them -- the same
    function the blockwise path uses to join its blocks.
    """
    if mode not in ("2d", "3d"):
        raise ValueError(f"mode must be '2d' or '3d', got {mode!r}")
    if np.dtype(out.dtype).kind not in "iu" or np.dtype(out.dtype).itemsize < 4:
        raise ValueError(f"the label output must be a 32- or 64-bit integer array, got {out.dtype}")
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
        if z_smooth and not is2d:
            lo, hi = max(0, z - 2), min(n, z + 3)
            p = smooth_z_at(median_probs(prob[lo:hi]), z - lo) if median else smooth_z_at(prob, z)
        elif median and not is2d:
            lo, hi = max(0, z - 1), min(n, z + 2)
            p = median_probs(prob[lo:hi])[z - lo]
        elif median:
            p = median_probs(get(prob, z))
        else:
            p = get(prob, z)
        return prob_to_mask(p, threshold, fill_holes)

    counts, sizes, pairs = [], [], []
    prev = None
    for z in range(n):
        lab, k = label_slice(slice_mask(z), split)
        counts.append(k)
        sizes.append(np.bincount(lab.ravel(), minlength=k + 1)[1:])
        if z:
            pairs.append(overlap_pairs(prev, lab) if mode == "3d" else np.zeros((0, 2), np.int64))
        if k > np.iinfo(np.dtype(out.dtype)).max:
            raise ValueError(f"too many objects for a {out.dtype} label array")
        put(z, lab)
        prev = lab
        yield Progress(z + 1, 2 * n, "label")
    luts, n_objects = merge_ids(counts, sizes, pairs, min_size, out.dtype)
    for z in range(n):
        put(z, luts[z][get(out, z)])
        yield Progress(n + z + 1, 2 * n, "label")
    return n_objects
