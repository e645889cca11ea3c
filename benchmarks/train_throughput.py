"""Training throughput inside the napari viewer (Train widget, thread worker) vs the command line.

Both runs train the same config on the same data for the same steps, each in a fresh
process, alternating (cli, viewer, cli, viewer, ...) to average out machine noise:

* ``cli``: ``cellgen train`` itself (``napari_cellgen.cli.main``), progress bar on;
* ``viewer``: a real ``napari.Viewer`` shown on an X server (Xvfb when there is no
  display) with the Train and Segment widgets docked; the Train widget's Start is
  pressed and the event loop runs until the worker finishes. Its progress bar, ETA
  label and live plot update as they would for a user.

Throughput = batch / mean wall time per training step, from timestamps taken in the
thread that runs the training, excluding the first ``--warmup`` steps and steps
that ran validation. The viewer run also records how long the event loop was
blocked (a 20 ms QTimer: the largest and 99th-percentile gaps) = is it responsive.

    python benchmarks/train_throughput.py                       # ~5 min on 2 cores
    python benchmarks/train_throughput.py --steps 12 --repeats 1  # smoke test

Writes ``benchmarks/results/train_throughput.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the children run this file by path too
from _provenance import stamp, write_json  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data" / "lucchi"


def _common(args):
    return dict(steps=args.steps, patch=256, batch=args.batch, slices=args.slices, val_fraction=0.1)


def _rate(stamps, batch, warmup):
    """samples/s from [(step, t, had_validation)] recorded in the training thread."""
    d = [(b[1] - a[1]) for a, b in zip(stamps, stamps[1:], strict=False) if b[0] > warmup and not b[2]]
    return batch / statistics.fmean(d) if d else float("nan"), len(d)


def _stamp_generator(gen, stamps):
    """Pass a training generator through, stamping each step in the thread that runs it."""
    import torch

    stamps.append(("threads", torch.get_num_threads(), threading.current_thread().name))
    try:
        while True:
            try:
                p = next(gen)
            except StopIteration as stop:
                return stop.value
            if p.stage == "train":
                stamps.append((p.done, time.perf_counter(), "val_iou" in (p.info or {})))
            yield p
    finally:
        gen.close()


def child_cli(args, out_json):
    from napari_cellgen import _progress, cli

    stamps: list = []
    real_run = _progress.run

    def run(gen, callback=None):
        if getattr(gen, "__name__", "") in ("train_model", "train_job"):  # not validation's inner jobs
            gen = _stamp_generator(gen, stamps)
        return real_run(gen, callback)

    _progress.run = run
    c = _common(args)
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["train", "--images", str(args.data / "training.tif"), "--masks",
                str(args.data / "training_groundtruth.tif"), "--slices", c["slices"], "--init", "scratch",
                "--steps", str(c["steps"]), "--patch", str(c["patch"]), "--batch", str(c["batch"]),
                "--val-fraction", str(c["val_fraction"]), "--val-every", str(max(1, c["steps"] // 20)),
                "--device", "cpu", "--no-register", "-o", str(Path(tmp) / "m")]
        t0 = time.perf_counter()
        rc = cli.main(argv)
        total = time.perf_counter() - t0
    threads = stamps.pop(0)
    rate, n = _rate(stamps, c["batch"], args.warmup)
    Path(out_json).write_text(json.dumps({"mode": "cli", "rc": rc, "samples_per_s": rate, "steps_timed": n,
                                          "total_s": total, "torch_threads": threads[1],
                                          "thread": threads[2]}))


def child_viewer(args, out_json):
    import napari
    import numpy as np
    import tifffile
    from qtpy.QtCore import QTimer

    from napari_cellgen._qt.segment_widget import SegmentWidget
    from napari_cellgen._qt.train_widget import TrainWidget
    from napari_cellgen.train import loop

    c = _common(args)
    img = tifffile.imread(args.data / "training.tif")
    gt = tifffile.imread(args.data / "training_groundtruth.tif")
    stamps: list = []
    real = loop.train_model

    def stamped_train_model(*a, **k):
        # a generator function, as the thread worker needs
        return (yield from _stamp_generator(real(*a, **k), stamps))

    loop.train_model = stamped_train_model
    viewer = napari.Viewer(show=True)
    viewer.add_image(img, name="lucchi")
    lab = viewer.add_labels((gt > 0).astype(np.uint8), name="lucchi mitochondria")
    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg, name="Segment")
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w, name="Train")
    w.images.value, w.labels.value = [viewer.layers["lucchi"]], [lab]
    w.base.value = "scratch"
    w.slices.value = c["slices"]
    w.steps.value, w.patch.value, w.batch.value = c["steps"], c["patch"], c["batch"]
    w.val_fraction.value = c["val_fraction"]
    w.name.value = f"throughput-bench-{os.getpid()}"

    gaps: list[float] = []
    last = [time.perf_counter()]

    def tick():
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(20)
    app = napari.qt.get_qapp()
    done = {"t": None}
    t0 = time.perf_counter()
    w.start()
    worker = w._worker
    worker.finished.connect(lambda: done.update(t=time.perf_counter(), status=w.status.value))
    worker.finished.connect(lambda: QTimer.singleShot(200, app.quit))
    app.exec()
    timer.stop()
    threads = stamps.pop(0)
    rate, n = _rate(stamps, c["batch"], args.warmup)
    gaps_ms = sorted(1000 * g for g in gaps[5:])
    result = {
        "mode": "viewer", "samples_per_s": rate, "steps_timed": n, "total_s": (done["t"] or 0) - t0,
        "torch_threads": threads[1], "thread": threads[2], "status": done.get("status"),
        "event_loop_gap_ms": {"max": gaps_ms[-1] if gaps_ms else None,
                              "p99": gaps_ms[int(0.99 * (len(gaps_ms) - 1))] if gaps_ms else None,
                              "median": statistics.median(gaps_ms) if gaps_ms else None},
    }
    Path(out_json).write_text(json.dumps(result))
    with contextlib.suppress(RuntimeError):
        viewer.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--slices", default="0-29", help="annotated slices used by both runs")
    ap.add_argument("--warmup", type=int, default=5, help="steps left out of the timing")
    ap.add_argument("--repeats", type=int, default=2, help="cli/viewer pairs, alternating")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "train_throughput.json")
    ap.add_argument("--child", choices=["cli", "viewer"], help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child == "cli":
        return child_cli(args, args.child_out)
    if args.child == "viewer":
        return child_viewer(args, args.child_out)

    import torch

    runs = []
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        env.setdefault("CELLGEN_USER_DIR", str(Path(tmp) / "user"))  # never touch the real user folder
        base = [sys.executable, __file__, "--data", str(args.data), "--steps", str(args.steps), "--batch",
                str(args.batch), "--slices", args.slices, "--warmup", str(args.warmup)]
        for i in range(args.repeats):
            for mode in ("cli", "viewer"):
                out = Path(tmp) / f"{mode}{i}.json"
                cmd = [*base, "--child", mode, "--child-out", str(out)]
                if mode == "viewer" and not env.get("DISPLAY"):
                    cmd = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", *cmd]
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if proc.returncode or not out.exists():
                    sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
                    raise SystemExit(f"{mode} run failed (exit {proc.returncode})")
                r = json.loads(out.read_text())
                r["process_s"] = time.perf_counter() - t0
                runs.append(r)
                print(json.dumps(r), flush=True)
    cli_rates = [r["samples_per_s"] for r in runs if r["mode"] == "cli"]
    gui_rates = [r["samples_per_s"] for r in runs if r["mode"] == "viewer"]
    result = {
        "what": "training samples/s: napari Train widget (thread worker, real viewer, Xvfb) vs cellgen train",
        "config": {"init": "scratch (base 16, depth 4, scale 0.5, context 1)", "patch_input_px": 256,
                   "patch_model_px": 128, "batch": args.batch, "steps": args.steps, "slices": args.slices,
                   "data": "Lucchi training.tif", "warmup_steps_excluded": args.warmup,
                   "validation_steps_excluded": True},
        "cli_samples_per_s": statistics.fmean(cli_rates),
        "viewer_samples_per_s": statistics.fmean(gui_rates),
        "ratio_viewer_over_cli": statistics.fmean(gui_rates) / statistics.fmean(cli_rates),
        "target_ratio": 0.9,
        "runs": runs,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "platform": platform.platform()},
        **stamp(argv),
    }
    write_json(args.out, result)
    print(f"cli {result['cli_samples_per_s']:.2f} samples/s, viewer {result['viewer_samples_per_s']:.2f} "
          f"samples/s, ratio {result['ratio_viewer_over_cli']:.3f} -> {args.out}")


if __name__ == "__main__":
    main()
