"""The dask path against the in-memory path: identity, overhead, 2 workers vs 1, and a volume
several times larger than each worker's memory budget. Writes benchmarks/results/dask_scaling.json.

    python benchmarks/dask_scaling.py --part identity     # a Lucchi crop that fits (~3 min)
    python benchmarks/dask_scaling.py --part big          # Lucchi tiled into a big zarr (~8 min)
    python benchmarks/dask_scaling.py --part ddp          # training: 1 process vs --nproc 2 (~2 min)
    python benchmarks/dask_scaling.py --part all

Parts merge into the JSON (a later run of one part replaces only that part; each part keeps the
command and date that measured it). Workers are
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
from _provenance import model_ref, stamp, write_json  # run as a script: benchmarks/ is on sys.path

ROOT = Path(__file__).resolve().parents[1]
LUCCHI = ROOT.parent / "shared" / "data" / "lucchi" / "training.tif"
OUT = ROOT / "benchmarks" / "results" / "dask_scaling.json"
MB = 1024**2


def lucchi() -> np.ndarray:
    import tifffile

    return tifffile.imread(LUCCHI)


def warm(client, model: str | None):
    def load():
        import skimage.measure  # noqa: F401
        import torch  # noqa: F401

        import napari_cellgen.segment.blockwise  # noqa: F401
        import napari_cellgen.segment.measure  # noqa: F401

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
    stages: dict = {}
    t0 = time.perf_counter()
    ref = segment(vol, opt, callback=lambda p: stages.__setitem__(p.stage, time.perf_counter() - t0))
    t_mem = time.perf_counter() - t0
    out = {"volume": list(vol.shape), "model": model_ref(args.model), "block_z": args.block_z,
           "in_memory_s": t_mem, "in_memory_threads": 2, "n_objects": ref.n_objects,
           "in_memory_stage_end_s": stages}

    t0 = time.perf_counter()
    res = segment_blockwise(str(src), tmp / "inproc.zarr", opt, block_z=args.block_z, threads=2)
    out["blockwise_in_process_s"] = time.perf_counter() - t0  # same stages, no dask
    out["blockwise_in_process_stages_s"] = res.timings
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
    threads = max(1, (os.cpu_count() or 1) // args.big_workers)  # torch threads per worker
    with dask_client(workers=args.big_workers, memory_limit=args.memory_limit) as client:
        startup = time.perf_counter() - t0
        warm(client, args.model)
        t0 = time.perf_counter()
        res = segment_blockwise(str(path), tmp / "big_labels.zarr", opt, client=client, block_z=args.block_z,
                                threads=threads)
        wall = time.perf_counter() - t0
        peaks = worker_peak_memory(client)
    budget = _bytes(args.memory_limit)
    client_peak = peak_rss()
    return {
        "volume": [n, *arr.shape[1:]], "volume_gb": nbytes / 1e9, "model": model_ref(args.model),
        "labels_on_disk_uint32_gb": 4 * nbytes / 1e9, "workers": args.big_workers,
        "torch_threads_per_worker": threads,
        "block_z": args.block_z, "memory_limit_per_worker_mb": budget / MB,
        "workers_memory_budget_mb": args.big_workers * budget / MB,
        "volume_over_budget": nbytes / (args.big_workers * budget), "zarr_write_s": write_s,
        "cluster_startup_s": startup,
        "wall_s": wall, "stages_s": res.timings, "mpix_per_s": nbytes / 1e6 / wall,
        "n_objects": res.n_objects,
        "worker_peak_rss_mb": sorted(round(v / MB) for v in peaks.values()),
        "client_peak_rss_mb": round(client_peak / MB),
        "peak_within_budget": all(v <= budget for v in peaks.values()),
    }


def part_ddp(args, tmp: Path) -> dict:
    """Training throughput: one process (all cores) against --nproc 2 (DDP, gloo, one core each)."""
    import tifffile
    import torch

    from napari_cellgen._progress import run
    from napari_cellgen.train.ddp import train_model_ddp
    from napari_cellgen.train.loop import TrainConfig, train_model

    img = lucchi()[:20]
    mask = tifffile.imread(LUCCHI.with_name("training_groundtruth.tif"))[:20]
    out = {"data": "Lucchi slices 0-19", "model": "U-Net base 16, depth 4, scale 0.5, context 1",
           "patch_model_px": 128, "global_batch": 8, "steps": args.ddp_steps}
    for name, nproc in (("1_process_x_2_threads", 1), ("2_processes_x_1_thread", 2)):
        cfg = TrainConfig(steps=args.ddp_steps, patch=128, batch=8, val_every=10**6, val_fraction=0.1,
                          threads=2 if nproc == 1 else 1, seed=0)
        last = {}
        t0 = time.perf_counter()
        job = (train_model([(img, mask, None)], tmp / name, cfg) if nproc == 1 else
               train_model_ddp([(img, mask, None)], tmp / name, cfg, nproc=2))
        res = run(job, lambda p, last=last: last.update(p.info or {}))
        torch.set_num_threads(2)
        ddp_info = (res["card"] or {}).get("training", {}).get("ddp", {})
        out[name] = {"wall_s": time.perf_counter() - t0, "samples_per_s": last.get("samples_per_s"),
                     "replicas_in_sync": ddp_info.get("replicas_in_sync")}
    out["speedup_2_processes"] = (out["2_processes_x_1_thread"]["samples_per_s"]
                                  / out["1_process_x_2_threads"]["samples_per_s"])
    return out


def markdown(results: dict) -> str:
    """The numbers of a results JSON as the tables of docs/scaling.md."""
    lines = []
    ident = results.get("identity_and_overhead")
    if ident:
        z, y, x = ident["volume"]
        t_bw = ident["blockwise_in_process_s"]
        ratio1, ratio2 = (ident["throughput_2_workers_vs_1_worker_1_thread"],
                          ident["throughput_2_workers_vs_1_worker_2_threads"])
        ov = {k: 100 * ident[f"overhead_{k}_vs_in_memory"]
              for k in ("dask_1_worker_2_threads", "dask_2_workers", "blockwise_in_process")}
        lines += [f"Volume that fits: Lucchi {z} × {y} × {x} (uint8), model {_label(ident['model'])}, "
                  f"blocks of {ident['block_z']} slices; {ident['n_objects']} objects in memory.", "",
                  "| path | wall s | MPix/s | worker peak RSS MB | labels | max prob diff (/255) |",
                  "| --- | --- | --- | --- | --- | --- |",
                  f"| in memory, 1 process × 2 threads | {ident['in_memory_s']:.1f} | "
                  f"{z * y * x / 1e6 / ident['in_memory_s']:.2f} | – | reference | – |",
                  f"| blockwise in one process (no dask), 2 threads | {t_bw:.1f} | "
                  f"{z * y * x / 1e6 / t_bw:.2f} | – | identical | 0 |"]
        for name, r in ident["dask"].items():
            same = ("identical" if r["labels_identical"] else
                    "equal up to ids" if r["labels_equal_up_to_permutation"] else "DIFFERENT")
            lines.append(f"| dask, {name.replace('_', ' ')} | {r['wall_s']:.1f} | {r['mpix_per_s']:.2f} | "
                         f"{', '.join(map(str, r['worker_peak_rss_mb']))} | {same} | "
                         f"{r['prob_max_abs_diff_uint8']} |")
        lines += ["", f"* 2 workers vs 1 worker × 1 thread: **{ratio1:.2f}×**; "
                  f"vs 1 worker × 2 threads: **{ratio2:.2f}×**.",
                  f"* Overhead of the dask path vs in memory (same 2 cores): 1 worker × 2 threads "
                  f"**{ov['dask_1_worker_2_threads']:+.1f} %**, 2 workers × 1 thread "
                  f"**{ov['dask_2_workers']:+.1f} %**, blockwise without dask "
                  f"**{ov['blockwise_in_process']:+.1f} %**."]
    big = results.get("larger_than_worker_memory")
    if big:
        z, y, x = big["volume"]
        lines += ["", f"Larger volume: Lucchi tiled to {z} × {y} × {x} = {big['volume_gb']:.2f} GB (uint8), "
                  f"{big['workers']} worker(s) × {big.get('torch_threads_per_worker', 1)} torch thread(s), "
                  f"memory limit {big['memory_limit_per_worker_mb']:.0f} MB per worker "
                  f"(volume = {big['volume_over_budget']:.1f}× the workers' total limit): {big['wall_s']:.0f} s, "
                  f"{big['mpix_per_s']:.2f} MPix/s, {big['n_objects']} objects; worker peak RSS "
                  f"{', '.join(map(str, big['worker_peak_rss_mb']))} MB, "
                  f"client {big['client_peak_rss_mb']} MB."]
    tr = results.get("training_ddp")
    if tr:
        one, two = tr["1_process_x_2_threads"], tr["2_processes_x_1_thread"]
        lines += ["", f"Training ({tr['model']}, global batch {tr['global_batch']}, {tr['steps']} steps): "
                  f"1 process × 2 threads {one['samples_per_s']:.1f} samples/s, `--nproc 2` "
                  f"{two['samples_per_s']:.1f} samples/s (**{tr['speedup_2_processes']:.2f}×**), replicas in "
                  f"sync: {two['replicas_in_sync']}."]
    return "\n".join(lines)


def _label(model) -> str:
    """A result's model as text: ``name@sha12`` (older results hold only the name)."""
    return model["label"] if isinstance(model, dict) else str(model)


def _bytes(text: str) -> int:
    from dask.utils import parse_bytes

    return int(parse_bytes(text))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["identity", "big", "ddp", "all"], default="all")
    ap.add_argument("--ddp-steps", type=int, default=30, help="training steps per DDP run")
    ap.add_argument("--model", default=None, help="model name or folder (default: the shipped mito-unet)")
    ap.add_argument("--fit-slices", type=int, default=32, help="slices of the volume that fits (identity)")
    ap.add_argument("--big-slices", type=int, default=1400, help="slices of the tiled big volume")
    ap.add_argument("--big-seconds", type=float, default=None,
                    help="size the big volume to about this many seconds at the measured 2-worker rate")
    ap.add_argument("--big-workers", type=int, default=2, help="workers for the big volume")
    ap.add_argument("--block-z", type=int, default=4)
    ap.add_argument("--memory-limit", default="768MiB", help="per worker")
    ap.add_argument("--tmp", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--out", default=str(OUT), help="JSON to write (default: %(default)s)")
    ap.add_argument("--markdown", action="store_true",
                    help="print the numbers of --out as markdown and run nothing")
    args = ap.parse_args()
    out_path = Path(args.out)
    if args.markdown:
        print(markdown(json.loads(out_path.read_text())))
        return
    tmp = Path(tempfile.mkdtemp(prefix="dask-scaling-", dir=args.tmp))
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    results["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                          "platform": platform.platform(), "note": "2-core VM, no GPU"}

    def save():
        results.update(stamp())
        write_json(out_path, results, default=float)

    try:  # saved after every part, so that a part that runs out of time keeps the others
        if args.part in ("identity", "all"):
            results["identity_and_overhead"] = {**part_identity(args, tmp), **stamp()}
            print(json.dumps(results["identity_and_overhead"], indent=1))
            save()
        if args.part in ("big", "all"):
            ident = results.get("identity_and_overhead") or {}
            rate = (ident.get("dask") or {}).get("2_workers_x_1_thread", {}).get("mpix_per_s")
            if args.big_seconds and rate:  # as many slices as 2 workers segment in that time
                args.big_slices = max(8, int(rate * 1e6 * args.big_seconds / (768 * 1024)))
            results["larger_than_worker_memory"] = {**part_big(args, tmp), **stamp()}
            print(json.dumps(results["larger_than_worker_memory"], indent=1))
            save()
        if args.part in ("ddp", "all"):
            results["training_ddp"] = {**part_ddp(args, tmp), **stamp()}
            print(json.dumps(results["training_ddp"], indent=1))
            save()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"-> {out_path}")


if __name__ == "__main__":
    main()
