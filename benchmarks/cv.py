"""Blocked cross-validation of a segmenter training recipe over the Lucchi training volume.

The volume's 165 slices are cut into ``--folds`` contiguous blocks (5 x 33 by default). For each
fold the recipe (the arguments of ``train_default.py`` after ``--``) trains on the other blocks,
minus ``--gap`` slices on each side of the held-out block (the 2.5D context would otherwise see
them), with no validation: the schedule's last (EMA) weights are kept, as for the shipped model.
The whole pipeline (``segment``, defaults) then segments the held-out block and its foreground
IoU is the fold's score. Reported: each fold, mean and standard deviation over folds.

Honesty: every recipe choice is compared by these means, never by a number on slices that
trained the compared models; the Lucchi testing volume stays outside (checked independently).

    # a recipe from scratch, 5 folds (each fold is one training: hours on a 2-core CPU)
    python benchmarks/cv.py --name scratch3k -- --steps 3000 --lr 2e-3 --ema 0.998 --dice batch
    python benchmarks/cv.py --name smoke --folds 5 --only 0 -- --steps 2 --batch 2   # smoke test
    # on a GPU machine: all 5 folds at once (each fold's process samples and augments on 2 CPU threads)
    python benchmarks/cv.py --name scratch16k_bf16 --device cuda --parallel 5 --threads 2 -- --steps 16000 ...

Writes ``benchmarks/results/cv_NAME.json`` after every fold (``--resume`` skips finished folds and
continues a fold stopped with ``kill`` (SIGTERM) from the checkpoint it wrote; its train_s then
counts only the last part).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _provenance import model_ref, stamp, write_json  # noqa: E402
from train_default import DATA, load_lucchi, spans  # noqa: E402


def folds(n: int, k: int) -> list[list[int]]:
    """``k`` contiguous blocks covering ``range(n)`` (the first ``n % k`` one slice longer)."""
    edges = np.linspace(0, n, k + 1).round().astype(int)
    return [list(range(a, b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def train_slices(n: int, held: list[int], gap: int) -> list[int]:
    lo, hi = held[0] - gap, held[-1] + gap
    return [z for z in range(n) if z < lo or z > hi]


def score(model_dir: Path, img, gt, zs, device: str = "cpu") -> dict:
    from napari_cellgen.metrics import foreground_iou
    from napari_cellgen.segment.pipeline import SegmentOptions, segment

    # fp32, as every fold was scored before int8 became cellgen's CPU default (a protocol keeps its metric)
    lab = segment(img[zs[0]:zs[-1] + 1], SegmentOptions(model=str(model_dir), measure=False, precision="fp32",
                                                             device=device)).labels
    return {"iou": foreground_iou(lab, gt[zs[0]:zs[-1] + 1])}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    recipe = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True, help="the recipe's name (output file, run folders)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--gap", type=int, default=2, help="slices left out on each side of the held-out block")
    ap.add_argument("--only", default=None, help="run only these folds (e.g. 0,3)")
    ap.add_argument("--runs", type=Path, default=Path("runs/cv"))
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--device", default="cpu", help="torch device for training and scoring (cpu, cuda)")
    ap.add_argument("--parallel", type=int, default=1, help="train this many folds at once (one GPU can hold all)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads per fold's training")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(own)
    if any(a in recipe for a in ("--train-slices", "--val-slices", "--out", "--final", "--device", "--threads",
                                 "--data")):
        raise SystemExit("the recipe may not set --train-slices, --val-slices, --out, --final, --device, --threads "
                         "or --data: cv.py does")

    img, gt = load_lucchi(args.data)
    n = img.shape[0]
    out = args.out or HERE / "results" / f"cv_{args.name}.json"
    res = json.loads(out.read_text()) if (args.resume and out.is_file()) else {
        "what": "blocked cross-validation of a segmenter recipe: train on the other blocks, score the held-out one",
        "recipe": recipe, "folds": [], **stamp(argv)}
    done = {f["fold"] for f in res["folds"]}
    only = {int(v) for v in args.only.split(",")} if args.only else None
    todo = [(i, held) for i, held in enumerate(folds(n, args.folds))
            if i not in done and (only is None or i in only)]
    running: list[tuple[int, list[int], list[int], Path, bool, float, subprocess.Popen]] = []

    def finish(job) -> None:
        i, held, train, run_dir, resumed, t0, proc = job
        if proc.wait() != 0:
            raise SystemExit(f"fold {i}: training failed (exit {proc.returncode}); see {run_dir}/run.log")
        train_s = time.time() - t0
        row = {"fold": i, "held_out": spans(held), "trained_on": spans(train), "train_s": round(train_s, 1),
               **({"resumed_from_checkpoint": True} if resumed else {}),
               **({"device": args.device, "parallel": args.parallel} if args.device != "cpu" or args.parallel > 1
                  else {}),
               "model": model_ref(run_dir / "last"), **score(run_dir / "last", img, gt, held, args.device)}
        res["folds"].append(row)
        ious = [f["iou"] for f in res["folds"]]
        res["summary"] = {"folds_done": len(ious), "iou_mean": statistics.fmean(ious),
                          "iou_std": statistics.stdev(ious) if len(ious) > 1 else None}
        write_json(out, res)
        print(json.dumps(row), flush=True)

    for i, held in todo:
        train = train_slices(n, held, args.gap)
        run_dir = args.runs / args.name / f"fold{i}"
        run_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(HERE / "train_default.py"), "--data", str(args.data), "--out", str(run_dir / "run"),
               "--final", str(run_dir / "last"), "--train-slices", spans(train), "--val-slices", "none",
               "--device", args.device, *(["--threads", str(args.threads)] if args.threads else []), *recipe]
        # a fold stopped part-way (kill: train_default.py writes run/last/ on SIGTERM) continues from there
        resumed = args.resume and (run_dir / "run" / "last" / "state.json").is_file()
        if resumed:
            cmd.append("--resume")
        running.append((i, held, train, run_dir, resumed, time.time(), subprocess.Popen(cmd)))
        while len(running) >= max(1, args.parallel):  # wait for the first of the running folds to end
            ended = next((j for j in running if j[-1].poll() is not None), None)
            if ended is None:
                time.sleep(2)
                continue
            running.remove(ended)
            finish(ended)
    for job in running:
        finish(job)
    print(json.dumps(res.get("summary"), indent=1))


if __name__ == "__main__":
    main()
