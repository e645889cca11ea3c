"""Blockwise segmentation of volumes larger than memory, on dask.distributed (or in-process).

The volume is cut into blocks of whole slices along z. Why only z: the in-memory path
normalises every slice by its own percentiles and lays its tile grid over the whole slice
(:func:`~.predict.predict_stack`), so a y/x block would see different statistics and tile
positions and its probabilities would differ. Along z nothing couples slices but the
model's ``card["context"]`` neighbours, so each block reads ``context`` extra slices on each
side (mirrored at the ends of the volume exactly as in memory) and its probabilities are the
in-memory ones, computed by the same function. A slice of a 4096² volume costs ~100 MB per
block slice at most, so z-blocks bound memory well enough.

Stages (each a set of independent tasks; :func:`segment_blockwise_iter` yields progress):

1. per block: probabilities (uint8, as in memory) -> optional 3×3×3 median (one more slice of
   probabilities each side) -> :func:`~.postprocess.label_stack` with block-local ids, written to
   the output zarr; returns each local object's voxel count and z extent;
2. per block border: pairs of local ids that overlap across the border (face connectivity);
3. on the client: one union-find over all pairs (``scipy.sparse.csgraph``), the size filter and
   compact ids in order of first appearance -- the same ids as :func:`~.postprocess.label_stack`;
4. per block: local ids -> final ids in place; then ``commit`` renames the zarr into place;
5. optional measurements: each object is measured by the task of the block where it starts,
   with :func:`~.measure.measure_iter` on a slab that holds it whole; the tables are concatenated.

Only the committed zarr is visible under the output name: a failure anywhere removes the
partial folder and raises :class:`BlockError` naming the block.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._progress import Progress, run
from .block_tasks import Source, border_pairs, measure_slab, relabel_block, segment_block


class BlockError(RuntimeError):
    """A block task failed; the message names the block and the cause."""


def check_precision(precision: str, how: str = "segment without a dask cluster") -> str:
    """The precision the cluster path runs: "auto" is fp32 there (``quantize.resolve_precision`` for
    work outside this process); refuses int8, which is calibrated and run in this process."""
    from .quantize import resolve_precision

    resolved = resolve_precision(precision, in_process=False)
    if resolved != "fp32":
        raise ValueError(f"--precision {precision} runs in this process only: {how}, or choose fp32")
    return resolved


def plan_blocks(n: int, block_z: int) -> list[tuple[int, int]]:
    block_z = max(1, int(block_z))
    return [(z, min(n, z + block_z)) for z in range(0, n, block_z)]


def default_block_z(shape, budget_bytes: int = 256 * 1024**2) -> int:
    """Slices per block so that one block's working set (~8 bytes/voxel) stays near ``budget``."""
    per_slice = 8 * int(shape[-1]) * int(shape[-2])
    return int(max(1, min(64, budget_bytes // max(1, per_slice))))


# --------------------------------------------------------------------------- orchestration
@dataclass
class BlockwiseResult:
    labels: Path
    n_objects: int
    table: dict | None
    card: dict
    blocks: list[tuple[int, int]]
    timings: dict = field(default_factory=dict)
    probabilities: Path | None = None
    message: str = ""  # what was decided on the way (e.g. slices treated as separate images)


def _run_tasks(client, fn, arglist, stage: str, describe, retries: int = 0):
    """Run ``fn(*args)`` for every args; yield Progress; return the results in order."""
    results: list[Any] = [None] * len(arglist)
    total = len(arglist)
    if client is None:
        for i, args in enumerate(arglist):
            try:
                results[i] = fn(*args)
            except Exception as exc:
                raise BlockError(f"{describe(i)} failed: {type(exc).__name__}: {exc}") from exc
            yield Progress(i + 1, total, stage)
        return results
    from distributed import as_completed

    futures = [client.submit(fn, *args, pure=False, retries=retries) for args in arglist]
    index = {f.key: i for i, f in enumerate(futures)}
    done = 0
    try:
        for fut in as_completed(futures, loop=client.loop):
            i = index[fut.key]
            if fut.status != "finished":
                try:
                    exc = fut.exception()
                except Exception as err:  # noqa: BLE001 - cancelled: the cluster went away
                    exc = err
                if exc is None:  # lost, not raised: its worker died and took the scattered model with it
                    raise BlockError(
                        f"{describe(i)} was lost: its worker died (status {fut.status!r}), most often because "
                        "it passed its memory limit and was restarted. Give the workers more memory "
                        "(--memory-limit), fewer torch threads, or smaller blocks (--block-z)"
                    )
                raise BlockError(f"{describe(i)} failed on a worker: {type(exc).__name__}: {exc}") from exc
            results[i] = fut.result()
            fut.release()
            done += 1
            yield Progress(done, total, stage)
    finally:
        if done < total:
            client.cancel(futures)
            _settle(client, {f.key for f in futures})
    return results


def _executing(dask_worker) -> list:
    """The keys a worker is still running (cancelled tasks included: a thread cannot be stopped)."""
    st = dask_worker.state
    return [ts.key for ts in (*st.executing, *st.long_running)]


def _settle(client, keys: set, timeout: float = 120.0) -> None:
    """Wait until no worker still runs one of ``keys``: a cancelled block keeps running on its worker
    and would write into the output after the caller removed it (a partial folder left behind)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            running = {k for ks in client.run(_executing).values() for k in ks}
        except Exception:  # noqa: BLE001 - the cluster is gone: nothing of ours runs any more
            return
        if not running & keys:
            return
        time.sleep(0.1)


def merge_ids(blocks_info: list[dict], pairs: list[np.ndarray], min_size: int) -> tuple[list, int]:
    """Per-block lookup tables (local id -> final id): :func:`~.postprocess.merge_ids` over blocks."""
    from .postprocess import merge_ids as merge

    return merge([b["k"] for b in blocks_info], [b["sizes"] for b in blocks_info], pairs, min_size, np.uint32)


def _model_for(opt, model):
    """``(net, card)``: the caller's, or the named model loaded (fused, on the CPU) as in memory.

    Workers move it to their own device: the client (e.g. a login node) needs no GPU.
    """
    from .pipeline import get_model

    if model is not None:
        return model
    return get_model(opt.model, "cpu")


def segment_blockwise_iter(
    source,
    labels_out,
    options=None,
    *,
    client=None,
    block_z: int | None = None,
    threads: int | None = None,
    pixel_size=None,
    prob_out=None,
    model=None,
    retries: int = 0,
    chunks: tuple[int, int, int] | None = None,
) -> Generator[Progress, None, BlockwiseResult]:
    """Segment a (Z, Y, X) volume block by block into the zarr ``labels_out``.

    ``source``: a path (zarr, TIFF, folder; every worker must be able to open it, e.g. on a
    shared file system) or an array (numpy, zarr). ``client``: a ``distributed.Client``
    (see :func:`.cluster.dask_client`), or None to run the blocks one after the other in
    this process. ``threads``: torch threads per task. ``prob_out``: also write the uint8
    probabilities to this zarr. Options as :class:`~.pipeline.SegmentOptions`; with
    ``options.measure`` the result carries the measurement table. Close to cancel.
    """
    from ..io.zarr_io import ZarrWriter
    from .pipeline import SegmentOptions, switch_for_thick_sections
    from .predict import check_image, pick_device

    opt = (options or SegmentOptions()).validate()
    check_precision(opt.precision)
    # absolute paths: the workers may run in another folder, or on another machine
    src = (Source(path=os.path.abspath(source)) if isinstance(source, (str, os.PathLike))
           else Source(array=source))
    image = src.open()
    check_image(image)
    if image.ndim != 3:
        raise ValueError(f"blockwise segmentation needs a (Z, Y, X) stack, got shape {tuple(image.shape)}")
    from dataclasses import replace

    from .physical import adapt, given_pixel_size
    from .slices import resolve

    try:
        independent, mode, message = resolve(image, opt.slices, opt.mode)  # the in-memory path's choice
    except (OSError, RuntimeError, ValueError) as exc:
        if opt.slices != "auto":
            raise
        # the check reads a few slices on the client; if they cannot be read, the blocks that need
        # them will fail with the block named: segment as a volume and let them report it
        independent, mode = False, opt.mode
        message = f"could not check whether the slices are a volume ({type(exc).__name__}); treated as one"
    opt = replace(opt, mode=mode)
    if client is None:
        pick_device(opt.device)  # fail now, not in the first block, for an impossible device
    net, card = _model_for(opt, model)
    pixel_size = given_pixel_size(opt.pixel_size, pixel_size, 3)
    try:  # as in memory (measuring the section spacing reads a few slices on the client)
        card, own_context, notes = adapt(card, pixel_size, ndim=3, z_context=opt.z_context,
                                         image=None if independent else image)
    except (OSError, RuntimeError) as exc:
        card, own_context, notes = adapt(card, pixel_size, ndim=3, z_context=opt.z_context)
        notes.append(f"could not measure the section spacing ({type(exc).__name__}); neighbours are context")
    if model is None and (switched := switch_for_thick_sections(opt, card, own_context, notes, pixel_size, 3,
                                                                "cpu")):
        net, card, notes = switched
    message = "; ".join([m for m in (message, *notes) if m])
    independent = independent or own_context
    n = int(image.shape[0])
    block_z = int(block_z or default_block_z(image.shape))
    blocks = plan_blocks(n, block_z)
    cz = 1 if chunks is None else chunks[0]
    if block_z % cz:
        raise ValueError(f"the block size ({block_z} slices) must be a multiple of the chunk z size ({cz})")
    chunks = chunks or (1, min(512, image.shape[1]), min(512, image.shape[2]))
    t = {"start": time.perf_counter()}
    writer = ZarrWriter(labels_out, image.shape, np.uint32, chunks=chunks, pixel_size=pixel_size,
                        labels=True)
    pwriter = None
    try:
        if prob_out is not None:
            pwriter = ZarrWriter(prob_out, image.shape, np.uint8, chunks=chunks, pixel_size=pixel_size)
        tile, overlap = opt.at_model_scale(card)  # input pixels -> the (adapted) model's pixels
        params = {
            "tile": tile, "overlap": overlap, "batch_size": opt.batch, "device": opt.device,
            "tta": opt.views, "independent": independent, "threshold": opt.threshold,
            "fill_holes": opt.fill_holes,
            "mode": opt.mode, "split": opt.split, "median": opt.median, "threads": threads,
            "upsample": opt.upsample, "z_smooth": opt.smooths_z(opt.mode, independent),
            "labels_path": writer.array_path, "prob_path": pwriter.array_path if pwriter else None,
        }
        model_arg, src_arg = (net, card), src
        if client is not None:
            model_arg = client.scatter((net, card), broadcast=True, hash=False)
            if src.array is not None:
                src_arg = client.scatter(src, broadcast=True, hash=False)

        def block_name(i):
            z0, z1 = blocks[i]
            return f"block {i + 1}/{len(blocks)} (slices {z0}-{z1 - 1})"

        infos = yield from _run_tasks(
            client, segment_block, [(src_arg, model_arg, z0, z1, params) for z0, z1 in blocks],
            "segment", block_name, retries)
        t["segment"] = time.perf_counter()
        borders = [z1 for _, z1 in blocks[:-1]] if opt.mode == "3d" else []
        pairs = yield from _run_tasks(
            client, border_pairs, [(writer.array_path, z) for z in borders], "merge",
            lambda i: f"the border at slice {borders[i]}", retries)
        if opt.mode != "3d":
            pairs = [np.zeros((0, 2), np.int64)] * (len(blocks) - 1)
        luts, n_objects = merge_ids(infos, pairs, opt.min_size)
        relabel = [(writer.array_path, z0, z1, lut) for (z0, z1), lut in zip(blocks, luts, strict=True)]
        yield from _run_tasks(client, relabel_block, relabel, "relabel", block_name, retries)
        t["label"] = time.perf_counter()
        table = None
        if opt.measure:
            table = yield from _measure(client, writer.array_path, src_arg, blocks, infos, luts,
                                        n_objects, pixel_size, retries)
        t["measure"] = time.perf_counter()
        extra = {"napari_cellgen": {"complete": False, "labels": True, "n_objects": n_objects,
                                    "model": card.get("name"), "block_z": block_z}}
        if pwriter is not None:
            pwriter.commit()
        path = writer.commit(extra)
    except BaseException:
        writer.abort()
        if pwriter is not None:
            pwriter.abort()
        raise
    timings = {"segment_s": t["segment"] - t["start"], "label_s": t["label"] - t["segment"],
               "measure_s": t["measure"] - t["label"], "total_s": time.perf_counter() - t["start"]}
    return BlockwiseResult(path, n_objects, table, card, blocks, timings,
                           pwriter.path if pwriter else None, message)


def _measure(client, labels_path, src_arg, blocks, infos, luts, n_objects, pixel_size, retries):
    """Stage 5: each object measured whole by the block where it starts; tables concatenated."""
    from .measure import _add_physical, _columns

    if not n_objects:
        cols = _columns([], False)
        if pixel_size is not None:
            _add_physical(cols, pixel_size, False)
        return cols
    zfirst = np.full(n_objects + 1, np.iinfo(np.int64).max, np.int64)
    zlast = np.full(n_objects + 1, -1, np.int64)
    for info, lut in zip(infos, luts, strict=True):
        ids = lut[1:].astype(np.int64)
        np.minimum.at(zfirst, ids, info["zfirst"])
        np.maximum.at(zlast, ids, info["zlast"])
    zfirst[0], zlast[0] = 0, 0
    starts = np.array([z0 for z0, _ in blocks])
    owner = np.searchsorted(starts, zfirst[1:], side="right") - 1  # block holding each object's start
    tasks, names = [], []
    for b, (z0, _) in enumerate(blocks):
        ids = np.nonzero(owner == b)[0] + 1
        if len(ids):
            tasks.append((labels_path, src_arg, z0, int(zlast[ids].max()) + 1, ids, n_objects))
            names.append(f"measuring the objects of block {b + 1}/{len(blocks)}")
    parts = yield from _run_tasks(client, measure_slab, tasks, "measure", lambda i: names[i], retries)
    cols = {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}
    order = np.argsort(cols["label"], kind="stable")
    cols = {c: v[order] for c, v in cols.items()}
    if pixel_size is not None:
        _add_physical(cols, pixel_size, False)
    return cols


def segment_blockwise(source, labels_out, options=None, callback=None, **kw) -> BlockwiseResult:
    """Synchronous :func:`segment_blockwise_iter` (``callback`` receives each Progress)."""
    return run(segment_blockwise_iter(source, labels_out, options, **kw), callback)


def segment_on_cluster_iter(
    image,
    labels_out,
    options=None,
    *,
    scheduler: str,
    source_path=None,
    pixel_size=None,
    model=None,
    in_memory_below: int = 1 << 30,
):
    """The Segment dock's cluster mode: :func:`segment_blockwise_iter` on the dask scheduler at
    ``scheduler``, labels into the zarr ``labels_out``.

    ``source_path`` (the file or folder the image was read from) goes to the workers when given,
    so they read it themselves (a shared file system); otherwise the array is sent to them.
    Returns a :class:`~.pipeline.SegmentResult` whose labels are the written zarr: loaded into
    memory when smaller than ``in_memory_below`` bytes, else opened lazily for writing (painting
    a correction then edits the file). Close the generator to cancel: nothing complete-looking
    is left at ``labels_out``.
    """
    import zarr

    from .cluster import dask_client
    from .pipeline import SegmentResult

    yield Progress(0, 1, f"connecting to {scheduler}")
    with dask_client(scheduler=scheduler) as client:
        src = str(source_path) if source_path else image
        res = yield from segment_blockwise_iter(src, labels_out, options, client=client, pixel_size=pixel_size,
                                                model=model)
    arr = zarr.open_array(str(Path(res.labels) / "0"), mode="r+")
    labels = arr[:] if arr.nbytes < in_memory_below else arr
    return SegmentResult(labels=labels, table=res.table, n_objects=res.n_objects, card=res.card,
                         options={"scheduler": scheduler, "labels_zarr": str(res.labels)}, message=res.message)
