"""The dask path against the in-memory path: identity, overhead, 2 workers vs 1, and a volume
several times larger than each worker's memory budget. Writes benchmarks/results/dask_scaling.json.

    python benchmarks/dask_scaling.py --part identity     # a Lucchi crop that fits (~3 min)
    python benchmarks/dask_scaling.py --part big          # Lucchi tiled into a big zarr (~8 min)
    python benchmarks/dask_scaling.py --part all

Parts merge into the JSON (a later run of one part replaces only that part). Workers are
warmed up (torch and the model imported) before timing; cluster start-up is reported apart.
Peak memory is each worker process's peak resident set size (``getrusage``), libraries included.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LUCCHI = ROOT.parent / "shared" / "data" / "lucchi" / "training.tif"
OUT = ROOT / "benchmarks" / "results" / "dask_scaling.json"
MB = 1024**2


def lucchi() -> np.ndarray:
    import tifffile

    return tifffile.imread(LUCCHI)


def warm(client, model: str | None):
    def load():
        import torch  # noqa: F401

        import napari_cellgen.segment.blockwise  # noqa: F401
        import napari_cellgen.segment.measure  # noqa: F401
        import skimage.measure  # noqa: F401

        return 1

    client.run(load)


def make_big(path: str, n: int) -> None:
    """Lucchi repeated along z into a zarr of ``n`` slices (chunks of 4 whole slices)."""
    import zarr

    base = lucchi()
    g = zarr.open_group(path, mode="w", zarr_format=2)
    arr = g.create_array("0", shape=(n, *base.shape[1:]), chunks=(4, *base.shape[1:]), dtype="uint8")
    for z in range(0, n, 4):
        idx = [(z + i) % len(base) for i in range(min(4, n - z))]
        arr[z : z + len(idx)] = base[idx]


def same_up_to_permutation(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a.ravel(), b.ravel()], 1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def part_identity(args, tmp: Path) -> dict:
    import torch
    import zarr

    from napari_cellgen.io.zarr_io import write_zarr
    from napari_cellgen.segment.blockwise import segment_blockwise
    from napari_cellgen.segment.cluster import dask_client, worker_peak_memory
    from napari_cellgen.segment.pipeline import SegmentOptions, get_model, segment

    vol = lucchi()[: args.fit_slices]
    src = write_zarr(tmp / "fit.zarr", vol, chunks=(1, 512, 512))
    opt = SegmentOptions(model=args.model, device="cpu", measure=True)
    net, card = get_model(args.model, "cpu")
    torch.set_num_threads(2)
    segment(vol[:2], opt)  # warm-up: imports, first-call allocations
    t0 = time.perf_counter()
    ref = segment(vol, opt)
    t_mem = time.perf_counter() - t0
    out = {"volume": list(vol.shape), "model": card.get("name"), "block_z": args.block_z,
           "in_memory_s": t_mem, "in_memory_threads": 2, "n_objects": ref.n_objects}

    t0 = time.perf_counter()
    res = segment_blockwise(str(src), tmp / "inproc.zarr", opt, block_z=args.block_z, threads=2)
    out["blockwise_in_process_s"] = time.perf_counter() - t0  # same stages, no dask
    runs = {}
    for name, workers, threads in (("1_worker_x_1_thread", 1, 1), ("1_worker_x_2_threads", 1, 2),
                                   ("2_workers_x_1_thread", 2, 1)):
        t0 = time.perf_counter()
        with dask_client(workers=workers, memory_limit=args.memory_limit) as client:
            startup = time.perf_counter() - t0
            warm(client, args.model)
            t0 = time.perf_counter()
            res = segment_blockwise(str(src), tmp / f"{name}.zarr", opt, client=client, block_z=args.block_z,
                                    threads=threads, prob_out=tmp / f"{name}_p.zarr")
            wall = time.perf_counter() - t0
            peaks = worker_peak_memory(client)
        lab = zarr.open_array(str(tmp / f"{name}.zarr" / "0"), mode="r")[:]
        prob = zarr.open_array(str(tmp / f"{name}_p.zarr" / "0"), mode="r")[:]
        runs[name] = {
            "wall_s": wall, "cluster_startup_s": startup, "stages_s": res.timings,
            "mpix_per_s": vol.size / 1e6 / wall,
            "worker_peak_rss_mb": sorted(round(v / MB) for v in peaks.values()),
            "n_objects": res.n_objects,
            "labels_identical": bool(np.array_equal(lab, ref.labels)),
            "labels_equal_up_to_permutation": same_up_to_permutation(lab, ref.labels),
            "prob_max_abs_diff_uint8": int(np.abs(prob.astype(np.int16) - ref.probabilities).max()),
            "table_volume_equal": bool(np.array_equal(np.sort(res.table["volume_px"]),
                                                      np.sort(ref.table["volume_px"]))),
        }
    out["dask"] = runs
    one, two, intra = (runs["1_worker_x_1_thread"]["wall_s"], runs["2_workers_x_1_thread"]["wall_s"],
                       runs["1_worker_x_2_threads"]["wall_s"])
    out["throughput_2_workers_vs_1_worker_1_thread"] = one / two
    out["throughput_2_workers_vs_1_worker_2_threads"] = intra / two
    out["overhead_dask_1_worker_2_threads_vs_in_memory"] = intra / t_mem - 1
    out["overhead_dask_2_workers_vs_in_memory"] = two / t_mem - 1
    out["overhead_blockwise_in_process_vs_in_memory"] = out["blockwise_in_process_s"] / t_mem - 1
    return out


def part_big(args, tmp: Path) -> dict:
    import zarr

    from napari_cellgen.segment.blockwise import segment_blockwise
    from napari_cellgen.segment.cluster import dask_client, peak_rss, worker_peak_memory
    from napari_cellgen.segment.pipeline import SegmentOptions, get_model

    n = args.big_slices
    path = tmp / "big.zarr"
    t0 = time.perf_counter()
    # tiled in a child process, so that this (client) process never holds the volume
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=make_big, args=(str(path), n))
    proc.start()
    proc.join()
    if proc.exitcode:
        raise SystemExit("writing the big zarr failed")
    write_s = time.perf_counter() - t0
    arr = zarr.open_array(str(path / "0"), mode="r")
    nbytes = n * arr.shape[1] * arr.shape[2]
    opt = SegmentOptions(model=args.model, device="cpu", measure=False)
    _, card = get_model(args.model, "cpu")
    t0 = time.perf_counter()
    with dask_client(workers=2, memory_limit=args.memory_limit) as client:
        startup = time.perf_counter() - t0
        warm(client, args.model)
        t0 = time.perf_counter()
        res = segment_blockwise(str(path), tmp / "big_labels.zarr", opt, client=client, block_z=args.block_z,
                                threads=1)
        wall = time.perf_counter() - t0
        peaks = worker_peak_memory(client)
    budget = _bytes(args.memory_limit)
    client_peak = peak_rss()
    return {
        "volume": [n, *arr.shape[1:]], "volume_gb": nbytes / 1e9, "model": card.get("name"),
        "labels_on_disk_uint32_gb": 4 * nbytes / 1e9, "workers": 2, "threads_per_worker": 1,
        "block_z": args.block_z, "memory_limit_per_worker_mb": budget / MB,
        "volume_over_budget": nbytes / budget, "zarr_write_s": write_s, "cluster_startup_s": startup,
        "wall_s": wall, "stages_s": res.timings, "mpix_per_s": nbytes / 1e6 / wall, "n_objects": res.n_objects,
        "worker_peak_rss_mb": sorted(round(v / MB) for v in peaks.values()),
        "client_peak_rss_mb": round(client_peak / MB),
        "peak_within_budget": all(v <= budget for v in peaks.values()),
    }


def _bytes(text: str) -> int:
    from dask.utils import parse_bytes

    return int(parse_bytes(text))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["identity", "big", "all"], default="all")
    ap.add_argument("--model", default=None, help="model name or folder (default: the shipped mito-unet)")
    ap.add_argument("--fit-slices", type=int, default=32, help="slices of the volume that fits (identity)")
    ap.add_argument("--big-slices", type=int, default=1400, help="slices of the tiled big volume")
    ap.add_argument("--block-z", type=int, default=4)
    ap.add_argument("--memory-limit", default="768MiB", help="per worker")
    ap.add_argument("--tmp", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--out", default=str(OUT), help="JSON to write (default: %(default)s)")
    args = ap.parse_args()
    out_path = Path(args.out)
    tmp = Path(tempfile.mkdtemp(prefix="dask-scaling-", dir=args.tmp))
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    results["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                          "platform": platform.platform(), "note": "2-core VM, no GPU"}
    try:
        if args.part in ("identity", "all"):
            results["identity_and_overhead"] = part_identity(args, tmp)
            print(json.dumps(results["identity_and_overhead"], indent=1))
        if args.part in ("big", "all"):
            results["larger_than_worker_memory"] = part_big(args, tmp)
            print(json.dumps(results["larger_than_worker_memory"], indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2, default=float))
    print(f"-> {out_path}")


if __name__ == "__main__":
    main()
