"""The tasks of blockwise segmentation, as they run on a worker (or in this process).

Each is a plain function of picklable arguments (a :class:`Source`, block bounds, zarr paths),
so dask can ship it to any worker: probabilities and local labels of a block
(:func:`segment_block`), the id pairs across a block border, relabelling in place, and the
measurements of the objects that start in a block. :mod:`.blockwise` plans the blocks, runs
these tasks and merges their results.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._progress import run

SLAB_BYTES = 256 * 1024**2  # measurement slabs up to this size are read into memory at once


# --------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Source:
    """A picklable handle on the input volume: a path (opened once per worker) or an array."""

    path: str | None = None
    array: Any = None

    def open(self):
        if self.array is not None:
            return self.array
        return _open_path(self.path)


_OPENED: dict[str, Any] = {}


def _open_path(path: str):
    if path not in _OPENED:
        from ..io import read_stack

        data, _ = read_stack(path, memory_limit=0)  # lazy / memory-mapped, never loaded whole
        _OPENED.clear()
        _OPENED[path] = data
    return _OPENED[path]


class _Window:
    """The slices ``r0:r1`` of a volume, read once, indexable by global slice number."""

    def __init__(self, image, r0: int, r1: int):
        self.shape = tuple(image.shape)
        self.dtype = np.dtype(image.dtype)
        self.ndim = 3
        self.r0 = r0
        self.data = np.asarray(image[r0:r1])

    def __getitem__(self, z):
        if not isinstance(z, (int, np.integer)) or not 0 <= z - self.r0 < len(self.data):
            raise IndexError(f"slice {z} is outside the block window")
        return self.data[int(z) - self.r0]


# --------------------------------------------------------------------------- tasks (workers)
_MALLOC_TUNED = False


def _tune_malloc() -> None:
    """Undo the cost of dask's ``MALLOC_TRIM_THRESHOLD_`` for this workload (glibc only, once).

    dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``; setting any malloc
    threshold switches off glibc's adaptive mmap threshold, so every buffer above 128 KB (each
    tile batch's activations) is mmapped and page-faulted afresh: blocks ran 1.6-2x slower.
    Restoring a 32 MB mmap threshold gives the in-process speed back.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 * 1024**2)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 64 * 1024**2)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc: nothing to undo
        pass


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(int(threads))


def _worker_device(device: str) -> str:
    """The device chosen where the block runs ("auto": this worker's GPU if it has one)."""
    from .predict import pick_device

    return pick_device(device)


def _open_zarr(path: str):
    import zarr

    return zarr.open_array(path, mode="r+")


def segment_block(src: Source, model, z0: int, z1: int, p: dict) -> dict:
    """Stage 1 for slices z0:z1: probabilities, local 3D labels, per-object size and z extent."""

    from .postprocess import label_stack, median_probs, smooth_z
    from .predict import predict_stack

    _tune_malloc()
    _set_threads(p.get("threads"))
    net, card = model
    device = _worker_device(p["device"])
    if device != "cpu":
        net = net.to(device)  # the worker's own copy: moved once, then a no-op
    image = src.open()
    n = image.shape[0]
    zsm = bool(p.get("z_smooth"))
    m = (1 if p["median"] else 0) + (1 if zsm else 0)  # true neighbour slices each side
    lo, hi = max(0, z0 - m), min(n, z1 + m)
    k = int(card.get("context", 0))
    window = _Window(image, max(0, lo - k), min(n, hi + k))
    prob = np.zeros((hi - lo, *image.shape[1:]), np.uint8)
    run(predict_stack(net, card, window, prob, tile=p["tile"], overlap=p["overlap"],
                      batch_size=p["batch_size"], device=device, tta=p["tta"],
                      zs=range(lo, hi), independent=p.get("independent", False),
                      upsample=p.get("upsample", "probability")))
    del window
    if p.get("prob_path"):
        _open_zarr(p["prob_path"])[z0:z1] = prob[z0 - lo : z1 - lo]
    # equal to label_stack's per-slice median and z smoothing: each needs one true neighbour slice each side
    if p["median"]:
        prob = median_probs(prob)
    if zsm:
        prob = smooth_z(prob)
    prob = prob[z0 - lo : z1 - lo]
    lab = np.zeros(prob.shape, np.uint32)
    nobj = run(label_stack(prob, lab, threshold=p["threshold"], min_size=0, fill_holes=p["fill_holes"],
                           mode=p["mode"], split=p["split"], median=False))
    del prob
    sizes = np.zeros(nobj + 1, np.int64)
    zfirst = np.full(nobj + 1, -1, np.int64)
    zlast = np.full(nobj + 1, -1, np.int64)
    for j in range(lab.shape[0]):
        counts = np.bincount(lab[j].ravel(), minlength=nobj + 1)
        sizes += counts
        present = counts > 0
        zfirst[present & (zfirst < 0)] = z0 + j
        zlast[present] = z0 + j
    _open_zarr(p["labels_path"])[z0:z1] = lab
    return {"z0": z0, "z1": z1, "k": nobj, "sizes": sizes[1:], "zfirst": zfirst[1:], "zlast": zlast[1:]}


def border_pairs(labels_path: str, z: int) -> np.ndarray:
    """Stage 2: (id in slice z-1, id in slice z) pairs of objects that overlap across a border."""
    arr = _open_zarr(labels_path)
    a, b = np.asarray(arr[z - 1]), np.asarray(arr[z])
    both = (a > 0) & (b > 0)
    if not both.any():
        return np.zeros((0, 2), np.int64)
    return np.unique(np.stack([a[both], b[both]], 1).astype(np.int64), axis=0)


def relabel_block(labels_path: str, z0: int, z1: int, lut: np.ndarray) -> int:
    """Stage 4: local ids -> final ids, in place, slice by slice."""
    arr = _open_zarr(labels_path)
    for z in range(z0, z1):
        arr[z] = lut[np.asarray(arr[z])]
    return z1 - z0


class _Keep:
    """A read-only view of a label volume's slices z0:z1 keeping only some ids (others -> 0)."""

    def __init__(self, arr, z0: int, z1: int, ids: np.ndarray, n_objects: int):
        self.arr, self.z0 = arr, z0
        self.keep = np.zeros(n_objects + 1, bool)
        self.keep[ids] = True
        self.shape = (z1 - z0, *arr.shape[1:])
        self.ndim, self.dtype = 3, np.dtype(arr.dtype)

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        zk = key[0]
        if isinstance(zk, slice):
            zk = slice((zk.start or 0) + self.z0, (self.shape[0] if zk.stop is None else zk.stop) + self.z0)
        else:
            zk = int(zk) + self.z0
        data = np.asarray(self.arr[(zk, *key[1:])])
        return np.where(self.keep[data], data, 0).astype(self.dtype, copy=False)


class _Offset:
    """The slices z0:z1 of an intensity volume, indexed from 0."""

    def __init__(self, arr, z0: int, z1: int):
        self.arr, self.z0 = arr, z0
        self.shape = (z1 - z0, *arr.shape[1:])
        self.ndim, self.dtype = 3, np.dtype(arr.dtype)

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        zk = key[0]
        zk = slice(zk.start + self.z0, zk.stop + self.z0) if isinstance(zk, slice) else int(zk) + self.z0
        return np.asarray(self.arr[(zk, *key[1:])])


def measure_slab(labels_path: str, src: Source | None, z0: int, z1: int, ids: np.ndarray,
                  n_objects: int) -> dict:
    """Stage 5: measure the objects ``ids`` (which lie whole in z0:z1) with measure_iter."""
    import zarr

    from .measure import measure_iter

    arr = zarr.open_array(labels_path, mode="r")
    labels = _Keep(arr, z0, z1, np.asarray(ids), n_objects)
    intensity = None if src is None else _Offset(src.open(), z0, z1)
    if 5 * int(np.prod(labels.shape)) <= SLAB_BYTES:
        # read (and decompress) the slab once; measure_iter then reads every slice and crop from RAM
        labels = labels[:]
        intensity = None if intensity is None else intensity[0 : labels.shape[0]]
    cols = run(measure_iter(labels, intensity))
    for c in ("z_start", "z_end", "bbox_z0", "bbox_z1"):
        cols[c] = cols[c] + z0
    cols["centroid_z"] = cols["centroid_z"] + z0
    return cols
