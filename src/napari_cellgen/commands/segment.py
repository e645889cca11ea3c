"""``cellgen segment``: one stack in, an instance-label TIFF (and a CSV of objects) out."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# stacks with more voxels than this are processed through temporary memmaps
IN_MEMORY_VOXELS = 256 * 1024**2


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "segment",
        help="segment mitochondria into instance labels (+ a CSV of measurements)",
        description="Segment mitochondria in an EM image or stack. Writes a TIFF of instance ids "
        "(0 = background) with the input's shape, and optionally a CSV with one row per object.",
    )
    p.add_argument("input", help="TIFF / OME-TIFF stack or a folder of numbered slices")
    p.add_argument("-o", "--output", required=True, help="labels TIFF to write")
    p.add_argument("--csv", help="write per-object measurements to this CSV file")
    p.add_argument("--model", default=None, help="registered model name or model folder (default: shipped)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    p.add_argument("--threshold", type=float, default=0.5, help="probability threshold (default 0.5)")
    p.add_argument("--tile", type=int, default=None, help="tile size at model resolution (default: card)")
    p.add_argument("--overlap", type=int, default=None, help="tile overlap at model resolution")
    p.add_argument("--min-size", type=int, default=200, help="smallest object kept, in pixels/voxels")
    p.add_argument("--2d", dest="two_d", action="store_true", help="label each slice on its own")
    p.add_argument("--split", action="store_true", help="split touching objects (watershed)")
    p.add_argument("--median", action="store_true", help="3x3x3 median filter on probabilities")
    p.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    p.add_argument("--probabilities", help="also write the probability map (uint8, 0-255) here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args) -> int:
    from .._progress import tqdm_callback
    from ..io import read_stack
    from ..segment.diskarray import DiskArray
    from ..segment.measure import write_csv
    from ..segment.pipeline import SegmentOptions, segment

    src = Path(args.input)
    if not src.exists():
        raise FileNotFoundError(f"{src} does not exist")
    out = Path(args.output)
    _check_writable(out)
    if args.csv:
        _check_writable(Path(args.csv))
    image, meta = _read(read_stack, src)
    pixel_size = _pixel_size(meta)
    opts = SegmentOptions(
        model=args.model, threshold=args.threshold, tile=args.tile, overlap=args.overlap,
        min_size=args.min_size, mode="2d" if args.two_d else "3d", split=args.split, median=args.median,
        device=args.device, batch_size=args.batch_size, measure=bool(args.csv),
    )
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".cellgen-") as tmp:
        kw = {}
        if image.ndim == 3 and int(np.prod(image.shape)) > IN_MEMORY_VOXELS:
            # larger than comfortable in RAM: stream through raw files next to the output
            kw["prob_out"] = DiskArray(Path(tmp) / "prob.raw", image.shape, np.uint8)
            kw["labels_out"] = DiskArray(Path(tmp) / "labels.raw", image.shape, np.uint32)
        cb = None if args.quiet else tqdm_callback()
        res = segment(image, opts, callback=cb, pixel_size=pixel_size, **kw)
        dtype = np.uint16 if res.n_objects < 65535 else np.uint32
        write_stack(out, res.labels, dtype, pixel_size)
        if args.probabilities:
            write_stack(Path(args.probabilities), res.probabilities, np.uint8, pixel_size)
        if args.csv:
            write_csv(args.csv, res.table)
        for arr in kw.values():
            arr.close()
    dt = time.perf_counter() - t0
    mpix = float(np.prod(image.shape)) / 1e6
    print(
        f"{res.n_objects} objects -> {out}" + (f", {args.csv}" if args.csv else "")
        + f" ({dt:.1f} s, {mpix / dt:.2f} MPix/s, model {res.card.get('name')})",
        file=sys.stderr,
    )
    return 0


def _read(read_stack, src):
    try:
        got = read_stack(src)
    except (ValueError, OSError) as exc:
        raise ValueError(f"cannot read {src}: {exc}") from exc
    if got is None:
        raise ValueError(f"{src} is not an image stack napari-cellgen can read (TIFF or a folder of slices)")
    return got


def _pixel_size(meta: dict):
    ps = (meta or {}).get("pixel_size_nm") or (meta or {}).get("pixel_size")
    return tuple(float(v) for v in ps) if ps else None


def _check_writable(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file name such as {path / 'labels.tif'}")
    if not parent.exists():
        raise FileNotFoundError(f"the output folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"cannot write into {parent}")


def write_stack(path: Path, data, dtype, pixel_size=None) -> None:
    """Stream a (Y, X) or (Z, Y, X) array slice by slice into a TIFF, atomically."""
    import tifffile

    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tif")
    os.close(fd)
    nbytes = int(np.prod(data.shape)) * np.dtype(dtype).itemsize
    kw = {}
    if pixel_size:
        py, px = pixel_size[-2:]
        kw["resolution"] = (1.0 / (px * 1e-3), 1.0 / (py * 1e-3))  # pixels per µm
        kw["resolutionunit"] = "MICROMETER"
    try:
        with tifffile.TiffWriter(tmp, bigtiff=nbytes > 2**31) as tw:
            planes = [data] if data.ndim == 2 else (data[z] for z in range(data.shape[0]))
            for plane in planes:
                tw.write(np.asarray(plane).astype(dtype, copy=False), contiguous=True,
                         compression=None, photometric="minisblack", **kw)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
