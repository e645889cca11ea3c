"""``cellgen segment``: one stack in, instance labels (TIFF or OME-Zarr) and a CSV of objects out.

With ``--workers N`` or ``--scheduler ADDRESS`` the stack is segmented block by block on
dask.distributed (:mod:`napari_cellgen.segment.blockwise`); otherwise in this process.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

# stacks with more voxels than this are processed through temporary memmaps
IN_MEMORY_VOXELS = 256 * 1024**2


def add_parser(sub) -> argparse.ArgumentParser:
    from ..cli import old_spelling
    from ..segment.quantize import PRECISIONS

    p = sub.add_parser(
        "segment",
        help="segment mitochondria into instance labels (+ a CSV of measurements)",
        description="Segment mitochondria in an EM image or stack. Writes a TIFF of instance ids "
        "(0 = background) with the input's shape, and optionally a CSV with one row per object.",
    )
    p.add_argument("input", help="TIFF / OME-TIFF stack, zarr / OME-Zarr, or a folder of numbered slices")
    p.add_argument("-o", "--output", required=True,
                   help="labels to write: NAME.tif, NAME.zarr (OME-Zarr), or IMG.zarr/labels/NAME to add "
                   "them to the input OME-Zarr IMG.zarr (its image untouched)")
    p.add_argument("--csv", help="write per-object measurements to this CSV file (default: none)")
    p.add_argument("--model", default=None,
                   help="registered model name, model folder or bioimage.io .zip (default: auto, the shipped "
                   "mito-unet, or mito-unet-travel when the sections are thick, as in ssTEM)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--threshold", type=float, default=0.5, help="probability threshold")
    p.add_argument("--tile", type=int, default=None, metavar="PX",
                   help="tile side in input pixels, like train's --patch (default: the model card's; "
                   "1280 px for the shipped model, which works at half resolution)")
    p.add_argument("--overlap", type=int, default=None, metavar="PX",
                   help="overlap of neighbouring tiles in input pixels (default: the model card's; 64 px "
                   "for the shipped model)")
    p.add_argument("--min-size", type=int, default=200, help="smallest object kept, in pixels/voxels")
    p.add_argument("--2d", dest="two_d", action="store_true",
                   help="each slice on its own: 2D labels, and no neighbouring slices as the model's context")
    p.add_argument("--slices", choices=("auto", "volume", "independent"), default="auto",
                   help="auto (default): a stack of unrelated images (generated tiles, separate micrographs) "
                   "is detected and segmented slice by slice; volume: always use neighbouring slices as "
                   "context; independent: each slice alone, like --2d")
    p.add_argument("--pixel-size", type=_nm_list, default=None, metavar="NM",
                   help="the image's pixel size in nm: one number (every axis) or Z,Y,X; overrides the file's. "
                   "The model then runs at its training pixel size (default: the file's, if it says)")
    p.add_argument("--z-context", choices=("auto", "neighbours", "self"), default="auto",
                   help="the model's 2.5D context: auto (default): each slice is its own context when the "
                   "sections are >= 3x thicker than the model's training data (e.g. 40 nm ssTEM vs 5 nm); "
                   "neighbours: always the neighbouring slices; self: never")
    p.add_argument("--split", action="store_true", help="split touching objects (watershed)")
    p.add_argument("--median", action="store_true", help="3x3x3 median filter on probabilities")
    p.add_argument("--views", type=int, default=2, choices=(1, 2, 4), metavar="VIEWS",
                   help="test-time augmentation, as the Segment dock's 'views': average the model over 1 "
                   "view (fastest), 2 (the image and its 180° rotation) or 4 (the four flips)")
    old_spelling(p, "--tta", dest="views", type=int, nargs="?", const=4, choices=(1, 2, 4))
    p.add_argument("--batch", type=int, default=4, help="tiles per forward pass")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="int8: the network quantized on the CPU, calibrated on this image (~3 s): about 1.7x "
                        "faster here, same accuracy on Lucchi (docs/benchmarks.md); fp32; auto (default): "
                        "int8 on the CPU, fp32 on a GPU or a dask cluster")
    old_spelling(p, "--batch-size", dest="batch", type=int)
    p.add_argument("--probabilities", help="also write the probability map (uint8, 0-255) here (default: none)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group(
        "dask cluster (volumes larger than memory; give -o LABELS.zarr)",
        "Split the stack into blocks of whole slices and segment them on dask.distributed workers; "
        "the labels are identical to the single-process path. Without these options: one process.")
    g.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="address of a running dask scheduler, e.g. tcp://10.0.0.5:8786 (workers must "
                   "see the input and output paths, e.g. on a shared file system; default: none, one process)")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="start a local dask cluster of N worker processes (default: none, one process)")
    g.add_argument("--block-z", type=int, default=None, metavar="SLICES",
                   help="slices per block (default: about 256 MB of working memory per block)")
    g.add_argument("--memory-limit", default="auto", metavar="SIZE",
                   help="memory limit per local worker, e.g. 1GiB (default: auto = RAM / N)")
    return p


def run(args) -> int:
    from .._checks import number
    from .._paths import check_input, check_outputs, check_space, read_input, temp_dir
    from .._progress import tqdm_callback
    from ..io.ome_labels import check_labels_target, labels_container
    from ..models.store import looks_like_path, read_card, resolve
    from ..segment.blockwise import check_precision
    from ..segment.diskarray import DiskArray
    from ..segment.measure import write_csv
    from ..segment.pipeline import SegmentOptions, segment
    from ..segment.predict import pick_device

    # every option, the model card and every output are checked before the input is read
    opts = SegmentOptions(
        model=args.model, threshold=args.threshold, tile=args.tile, overlap=args.overlap,
        min_size=args.min_size, mode="2d" if args.two_d else "3d", split=args.split, median=args.median,
        device=args.device, batch=args.batch, views=args.views, measure=bool(args.csv),
        slices=args.slices, pixel_size=args.pixel_size, z_context=args.z_context, precision=args.precision,
    ).validate()
    if args.scheduler or args.workers is not None:
        check_precision(opts.precision, "leave out --scheduler/--workers")
    number(args.workers, "--workers", lo=1, hi=1024, integer=True, none_ok=True)
    number(args.block_z, "--block-z", lo=1, integer=True, none_ok=True)
    pick_device(args.device)
    src = check_input("input", args.input)
    read_card(resolve(args.model))
    out = Path(args.output)
    into = labels_container(out)  # -o IMG.zarr/labels/NAME: labels added to that OME-Zarr, image untouched
    model_path = args.model if args.model and looks_like_path(args.model) else None
    check_outputs(
        inputs=[("input", src), ("--model", model_path)],
        outputs=[("-o", None if into else out, "auto"), ("--csv", args.csv, "file"),
                 ("--probabilities", args.probabilities, "auto")],
    )
    if into:
        check_labels_target(out)
    image, meta = read_input(src, "segment")
    if into:
        check_labels_target(out, tuple(image.shape))
    pixel_size = _pixel_size(meta)
    if args.scheduler or args.workers is not None:
        return _run_blockwise(args, src, out, image, pixel_size, opts)
    t0 = time.perf_counter()
    stream = image.ndim == 3 and int(np.prod(image.shape)) > IN_MEMORY_VOXELS
    if stream:  # uint8 probabilities + uint32 labels as raw files next to the output
        check_space(out.parent, 5 * int(np.prod(image.shape)), "temporary files of -o")
    with temp_dir(into or out.parent) as tmp:
        kw = {}
        if stream:
            # larger than comfortable in RAM: stream through raw files next to the output
            kw["prob_out"] = DiskArray(Path(tmp) / "prob.raw", image.shape, np.uint8)
            kw["labels_out"] = DiskArray(Path(tmp) / "labels.raw", image.shape, np.uint32)
        cb = None if args.quiet else tqdm_callback()
        res = segment(image, opts, callback=cb, pixel_size=pixel_size, **kw)
        if res.message:
            print(f"cellgen segment: {res.message}", file=sys.stderr)
        dtype = np.uint16 if res.n_objects < 65535 else np.uint32
        _write(out, res.labels, dtype, pixel_size, labels=True)
        if args.probabilities:
            _write(Path(args.probabilities), res.probabilities, np.uint8, pixel_size)
        if args.csv:
            write_csv(args.csv, res.table)
        for arr in kw.values():
            arr.close()
    dt = time.perf_counter() - t0
    mpix = float(np.prod(image.shape)) / 1e6
    print(
        f"{res.n_objects} objects -> {out}" + (f", {args.csv}" if args.csv else "")
        + f" ({dt:.1f} s, {mpix / dt:.2f} MPix/s, model {res.card.get('name')}"
        + (f", {res.options['precision']}" if (res.options or {}).get("precision") else "") + ")",
        file=sys.stderr,
    )
    return 0


def _is_zarr_name(path: Path) -> bool:
    return path.name.lower().rstrip("/").endswith(".zarr")


def _write(path: Path, data, dtype, pixel_size=None, labels: bool = False) -> None:
    """TIFF or, for a NAME.zarr path, OME-Zarr; atomic either way."""
    from ..io.ome_labels import labels_container, write_labels

    if labels and labels_container(path):  # IMG.zarr/labels/NAME
        write_labels(path, data, dtype=dtype)
    elif _is_zarr_name(path):
        from ..io.zarr_io import write_zarr

        write_zarr(path, data, pixel_size=pixel_size, labels=labels)  # labels stay uint32
    else:
        write_stack(path, data, dtype, pixel_size, labels=labels)


def _run_blockwise(args, src: Path, out: Path, image, pixel_size, opts) -> int:
    """The dask path: blocks of slices on a cluster, labels (and probabilities) as zarr."""
    from .._paths import temp_dir
    from .._progress import tqdm_callback
    from ..cli import UserError
    from ..segment.blockwise import BlockError, segment_blockwise
    from ..segment.cluster import ClusterError, dask_client, torch_threads_for
    from ..segment.measure import write_csv

    if image.ndim != 3:
        raise ValueError("--scheduler/--workers segment (Z, Y, X) stacks; run a 2D image without them")
    t0 = time.perf_counter()
    cb = None if args.quiet else tqdm_callback()
    threads = torch_threads_for(args.workers) if args.workers else None
    to_tiff = not _is_zarr_name(out)
    try:
        from ..io.ome_labels import labels_container

        with temp_dir(labels_container(out) or out.parent) as tmp, dask_client(
            args.scheduler, args.workers, memory_limit=args.memory_limit
        ) as client:
            labels_zarr = Path(tmp) / "labels.zarr" if to_tiff else out
            prob_zarr = None
            if args.probabilities:
                pp = Path(args.probabilities)
                prob_zarr = pp if _is_zarr_name(pp) else Path(tmp) / "prob.zarr"
            # workers open the input themselves: zarr, TIFF and folders are read lazily there
            res = segment_blockwise(
                str(src), labels_zarr, opts, cb, client=client, block_z=args.block_z, threads=threads,
                pixel_size=pixel_size, prob_out=prob_zarr,
            )
            if to_tiff or (args.probabilities and not _is_zarr_name(Path(args.probabilities))):
                import zarr

                if to_tiff:
                    dtype = np.uint16 if res.n_objects < 65535 else np.uint32
                    _write(out, zarr.open_array(str(labels_zarr / "0"), mode="r"), dtype, pixel_size,
                           labels=True)  # a TIFF, or IMG.zarr/labels/NAME
                if args.probabilities and not _is_zarr_name(Path(args.probabilities)):
                    write_stack(Path(args.probabilities), zarr.open_array(str(prob_zarr / "0"), mode="r"),
                                np.uint8, pixel_size)
            if args.csv:
                write_csv(args.csv, res.table)
    except (BlockError, ClusterError) as exc:
        raise UserError(f"{exc}. Nothing was written to {out}.") from exc
    if res.message:
        print(f"cellgen segment: {res.message}", file=sys.stderr)
    dt = time.perf_counter() - t0
    mpix = float(np.prod(image.shape)) / 1e6
    where = args.scheduler or f"{args.workers} local worker{'s' if args.workers > 1 else ''}"
    print(
        f"{res.n_objects} objects -> {out}" + (f", {args.csv}" if args.csv else "")
        + f" ({dt:.1f} s, {mpix / dt:.2f} MPix/s, {len(res.blocks)} blocks on {where}, "
        f"model {res.card.get('name')})",
        file=sys.stderr,
    )
    return 0


def _nm_list(text: str) -> tuple:
    """'5' or '40,5,5' -> (5.0,) / (40.0, 5.0, 5.0); argparse turns a ValueError into a one-line error."""
    try:
        return tuple(float(v) for v in str(text).replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not numbers of nm: {text!r} (e.g. 5 or 40,5,5)") from None


def _pixel_size(meta: dict):
    from ..io.stack import stored_pixel_size

    return stored_pixel_size(meta)


class _AsType:
    """A lazy per-slice dtype view, so huge label volumes are written slice by slice."""

    def __init__(self, data, dtype):
        self._data, self.dtype = data, np.dtype(dtype)
        self.shape, self.ndim = tuple(data.shape), data.ndim

    def __getitem__(self, key):
        return np.asarray(self._data[key]).astype(self.dtype, copy=False)


def write_stack(path: Path, data, dtype, pixel_size=None, labels: bool = False) -> None:
    """Write a (Y, X) or (Z, Y, X) array as an ImageJ-compatible TIFF, atomically, slice by slice."""
    from ..io import write_tiff

    data = data.astype(dtype, copy=False) if isinstance(data, np.ndarray) else _AsType(data, dtype)
    write_tiff(path, data, pixel_size, labels=labels)
