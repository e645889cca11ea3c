"""Carry the Lucchi training volume to a machine that cannot read ``../shared`` (a lent GPU machine).

The device tool sends the working tree and at most 64 MiB of carried files per call, so the volume
(112 MB as zlib TIFF) travels as LZMA chunks (about 49 MB each) over two calls and is rebuilt there
byte for byte (the sha256 of the arrays is checked)::

    python benchmarks/device_data.py pack --out .cvdata            # here: .cvdata/a/, .cvdata/b/
    python3 benchmarks/device_data.py unpack .cvdata/a .cvdata/b --out /tmp/lucchi   # there
    python3 benchmarks/device_data.py unpack .cvdata/a --partial --out /tmp/part     # slices 0-82 only

Only the standard library, numpy and tifffile are needed on the other side.

A generator run needs fewer slices (neighbouring slices are 5 nm apart): ``pack-subset`` writes one
part of chosen slices and ``unpack-subset`` rebuilds them as a smaller volume with ``slices.json``
naming the Lucchi slice of each page (``benchmarks/train_generator.py`` records it)::

    python benchmarks/device_data.py pack-subset --slices 0-114:2,115-139:4 --out .gendata
    python3 benchmarks/device_data.py unpack-subset .gendata --out /tmp/gen
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
from pathlib import Path

import numpy as np
import tifffile

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "lucchi"
FILES = ("training.tif", "training_groundtruth.tif")


def pack(data: Path, out: Path, parts: int = 2) -> None:
    img = tifffile.imread(data / FILES[0])
    gt = tifffile.imread(data / FILES[1])
    edges = np.linspace(0, len(img), parts + 1).round().astype(int)
    for k, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        d = out / "abcdefgh"[k]
        d.mkdir(parents=True, exist_ok=True)
        (d / "img.xz").write_bytes(lzma.compress(np.ascontiguousarray(img[a:b]).tobytes(), preset=6))
        meta = {"slices": [int(a), int(b)], "shape": list(img.shape), "dtype": str(img.dtype),
                "sha256_img": hashlib.sha256(img.tobytes()).hexdigest(),
                "sha256_gt": hashlib.sha256(gt.tobytes()).hexdigest()}
        if k == 0:  # the masks travel with the first part, so that part alone can run a smoke test
            (d / "gt.xz").write_bytes(lzma.compress(gt.tobytes(), preset=6))
        (d / "meta.json").write_text(json.dumps(meta))
        print(d, sum(f.stat().st_size for f in d.iterdir()) / 1e6, "MB")


def unpack(dirs: list[Path], out: Path, partial: bool = False) -> None:
    metas = [json.loads((d / "meta.json").read_text()) for d in dirs]
    shape, dtype = metas[0]["shape"], np.dtype(metas[0]["dtype"])
    img = np.zeros(shape, dtype)
    gt, have = None, np.zeros(shape[0], bool)
    for d, m in zip(dirs, metas, strict=True):
        a, b = m["slices"]
        have[a:b] = True
        img[a:b] = np.frombuffer(lzma.decompress((d / "img.xz").read_bytes()), dtype).reshape(b - a, *shape[1:])
        if (d / "gt.xz").exists():
            gt = np.frombuffer(lzma.decompress((d / "gt.xz").read_bytes()), dtype).reshape(shape)
    if gt is None:
        raise SystemExit("no part holds the masks (gt.xz)")
    if partial:  # a smoke test on the slices that came: the first contiguous run of them
        n = int(np.argmin(have)) if not have.all() else len(have)
        img, gt = img[:n], gt[:n]
    elif hashlib.sha256(img.tobytes()).hexdigest() != metas[0]["sha256_img"]:
        raise SystemExit("the images do not match their sha256: a part is missing or damaged")
    if not partial and hashlib.sha256(gt.tobytes()).hexdigest() != metas[0]["sha256_gt"]:
        raise SystemExit("the masks do not match their sha256")
    out.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(out / FILES[0], img)
    tifffile.imwrite(out / FILES[1], gt)
    print("rebuilt", out, img.shape)


def subset_slices(spec: str) -> list[int]:
    """'0-114:2,115-139:4' -> every 2nd slice of 0-114, then every 4th of 115-139."""
    out: list[int] = []
    for part in spec.split(","):
        rng, _, step = part.partition(":")
        a, _, b = rng.partition("-")
        out += list(range(int(a), int(b or a) + 1, int(step or 1)))
    return sorted(set(out))


def pack_subset(data: Path, out: Path, spec: str) -> None:
    zs = subset_slices(spec)
    img = tifffile.imread(data / FILES[0])[zs]
    gt = tifffile.imread(data / FILES[1])[zs]
    out.mkdir(parents=True, exist_ok=True)
    for name, a in (("img.xz", img), ("gt.xz", gt)):
        (out / name).write_bytes(lzma.compress(np.ascontiguousarray(a).tobytes(), preset=6))
    meta = {"slices": zs, "spec": spec, "shape": list(img.shape), "dtype": str(img.dtype),
            "sha256_img": hashlib.sha256(img.tobytes()).hexdigest(),
            "sha256_gt": hashlib.sha256(gt.tobytes()).hexdigest()}
    (out / "meta.json").write_text(json.dumps(meta))
    print(out, len(zs), "slices", sum(f.stat().st_size for f in out.iterdir()) / 1e6, "MB")


def unpack_subset(src: Path, out: Path) -> None:
    meta = json.loads((src / "meta.json").read_text())
    shape, dtype = meta["shape"], np.dtype(meta["dtype"])
    arrays = [np.frombuffer(lzma.decompress((src / f).read_bytes()), dtype).reshape(shape) for f in ("img.xz", "gt.xz")]
    for a, key in zip(arrays, ("sha256_img", "sha256_gt"), strict=True):
        if hashlib.sha256(a.tobytes()).hexdigest() != meta[key]:
            raise SystemExit(f"{src}: the data do not match their {key}")
    out.mkdir(parents=True, exist_ok=True)
    for a, name in zip(arrays, FILES, strict=True):
        tifffile.imwrite(out / name, a)
    (out / "slices.json").write_text(json.dumps({"slices": meta["slices"], "spec": meta["spec"]}))
    print("rebuilt", out, tuple(shape))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--out", type=Path, default=Path(".cvdata"))
    p.add_argument("--parts", type=int, default=2)
    u = sub.add_parser("unpack")
    u.add_argument("dirs", type=Path, nargs="+")
    u.add_argument("--out", type=Path, required=True)
    u.add_argument("--partial", action="store_true", help="write the first slices that came (smoke tests)")
    ps = sub.add_parser("pack-subset")
    ps.add_argument("--data", type=Path, default=DATA)
    ps.add_argument("--slices", required=True, help="e.g. 0-114:2,115-139:4 (range:step, comma-separated)")
    ps.add_argument("--out", type=Path, default=Path(".gendata"))
    us = sub.add_parser("unpack-subset")
    us.add_argument("src", type=Path)
    us.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.cmd == "pack":
        pack(args.data, args.out, args.parts)
    elif args.cmd == "pack-subset":
        pack_subset(args.data, args.out, args.slices)
    elif args.cmd == "unpack-subset":
        unpack_subset(args.src, args.out)
    else:
        unpack(args.dirs, args.out, args.partial)


if __name__ == "__main__":
    main()
