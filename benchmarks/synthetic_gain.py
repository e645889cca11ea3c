"""Do generated (image, mask) pairs help a segmenter trained on a few annotated slices?

Protocol (issue 6), on the Lucchi training volume (165 slices):

* validation = slices 140-164, never used to train anything (neither generator nor segmenter);
* k annotated slices, spread through 0-139 (k = 2: slices 35 and 105);
* an *honest* k-slice generator: the shipped generator's VAE (trained on images only, never on
  masks) is kept and a new denoiser is trained on the images of slices 0-139 and the masks of the
  k slices only (``cellgen train-generator --slices ... --init mito-gen --vae-steps 0
  --fresh-denoiser``); its mask-layout statistics are fitted on those k masks only;
* ``cellgen synth`` draws N new layouts from it and generates an image for each;
* the same U-Net (base 16, depth 4, scale 0.5, 2.5D context) is trained from scratch with the
  same budget (steps, batch, patch) under each condition:

  (a) the k real slices, standard augmentation;
  (b) (a) + the k-slice generator's pairs, half of every batch (``--synthetic-ratio 0.5``);
  (c) the k-slice generator's pairs only (``--synthetic-ratio 1``);
  (d) reference: all 140 non-validation slices annotated;
  (e) (d) + pairs of the shipped generator (which saw all 140 masks), half of every batch;

* foreground IoU (threshold 0.5, pooled over the 25 validation slices, full resolution).

Every step is a ``cellgen`` command (printed as it runs), so the protocol reruns on another
volume without this script. Results are written after every run, and finished runs are skipped
on a rerun (same ``--work``).

    python benchmarks/synthetic_gain.py                      # k=2, 3 seeds: ~90 min on 2 cores
    python benchmarks/synthetic_gain.py --k 1 2 4            # where time allows
    python benchmarks/synthetic_gain.py --steps 3 --gen-minutes 0.2 --n-synth 4 --seeds 0 \\
        --work /tmp/sg --out /tmp/sg.json                    # smoke test (~3 min)

Writes ``benchmarks/results/synthetic_gain.json`` and ``synthetic_gain.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _provenance import generator_ref, model_ref, stamp, write_json  # run as a script: benchmarks/ is on sys.path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "lucchi"
VAL = (140, 165)
NAMES = {
    "a": "k real slices",
    "b": "k real + synthetic (k-slice generator)",
    "c": "synthetic only (k-slice generator)",
    "d": "all 140 slices (reference)",
    "e": "all 140 slices + synthetic (shipped generator)",
}


def spread(k: int, n: int = VAL[0]) -> list[int]:
    """k slices spread evenly through 0..n-1 (centres of k equal blocks)."""
    return [int((i + 0.5) * n / k) for i in range(k)]


def cellgen(*args, log: Path) -> float:
    """Run a ``cellgen`` command (printed), its output appended to ``log``; returns seconds."""
    cmd = [sys.executable, "-m", "napari_cellgen", *map(str, args)]
    print("$ cellgen " + " ".join(shlex.quote(str(a)) for a in args), flush=True)
    t0 = time.perf_counter()
    with open(log, "a") as fh:
        fh.write("$ cellgen " + " ".join(map(str, args)) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise SystemExit(f"command failed ({proc.returncode}), see {log}")
    return time.perf_counter() - t0


def evaluate(model_dir: Path, img, gt) -> float:
    from napari_cellgen._progress import run
    from napari_cellgen.metrics import foreground_iou
    from napari_cellgen.models.store import load_model
    from napari_cellgen.segment.predict import predict_stack

    model, card = load_model(model_dir)
    prob = run(predict_stack(model, card, img, np.zeros(img.shape, np.float32)))
    return foreground_iou(prob >= 0.5, gt)


def summarise(runs: list[dict]) -> dict:
    out = {}
    for r in runs:
        key = f"k{r['k']}_{r['condition']}" if r["condition"] in "abc" else r["condition"]
        out.setdefault(key, {"condition": r["condition"], "k": r["k"] if r["condition"] in "abc" else None,
                             "name": NAMES[r["condition"]], "iou": []})["iou"].append(r["iou"])
    for v in out.values():
        v["n"] = len(v["iou"])
        v["mean"] = float(np.mean(v["iou"]))
        v["std"] = float(np.std(v["iou"], ddof=1)) if len(v["iou"]) > 1 else 0.0
    return out


def targets(summary: dict, ks) -> dict:
    t = {}
    for k in ks:
        a, b, c = (summary.get(f"k{k}_{x}") for x in "abc")
        if a and b:
            spread_ = max(a["std"], b["std"])
            t[f"k{k}_b_minus_a"] = {"gain": b["mean"] - a["mean"], "seed_spread": spread_,
                                    "met": b["mean"] - a["mean"] >= 0.05 and b["mean"] - a["mean"] > spread_}
        if a and c:
            t[f"k{k}_c_over_a"] = {"ratio": c["mean"] / max(a["mean"], 1e-9), "met": c["mean"] >= 0.8 * a["mean"]}
    d, e = summary.get("d"), summary.get("e")
    if d and e:
        sp = max(d["std"], e["std"])
        t["e_minus_d"] = {"diff": e["mean"] - d["mean"], "seed_spread": sp, "met": e["mean"] - d["mean"] >= -sp}
    return t


def plot(summary: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    keys = sorted(summary, key=lambda s: (s[0] != "k", s))
    fig, ax = plt.subplots(figsize=(1.4 * len(keys) + 1.5, 3.6))
    colours = {"a": "#4c72b0", "b": "#55a868", "c": "#c44e52", "d": "#8172b2", "e": "#937860"}
    for i, key in enumerate(keys):
        v = summary[key]
        ax.bar(i, v["mean"], yerr=v["std"], color=colours[v["condition"]], capsize=4)
        ax.scatter([i] * v["n"], v["iou"], color="k", s=8, zorder=3)
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([f"({summary[s]['condition']})" + (f"\nk={summary[s]['k']}" if summary[s]["k"] else "\nall")
                        for s in keys])
    ax.set_ylabel("validation IoU (slices 140-164)")
    ax.set_ylim(0, 1)
    ax.set_title("a: k real  b: + synthetic  c: synthetic only  d: all real  e: d + synthetic", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(res: dict) -> str:
    """The summary of a results file as a markdown table."""
    seg = res["protocol"]["segmenter"]
    rows = [f"Segmenter: {seg['architecture']}, {seg['steps']} steps × batch {seg['batch']}, patch {seg['patch']} px; "
            f"synthetic share {res['protocol']['synthetic_ratio']}, {res['protocol']['n_synth']} pairs per generator.",
            "", "| condition | k | IoU mean ± std | seeds | per seed |", "| --- | --- | --- | --- | --- |"]
    for key in sorted(res["summary"], key=lambda s: (s[0] != "k", s)):
        v = res["summary"][key]
        spread = f" ± {v['std']:.3f}" if v["n"] > 1 else ""
        rows.append(f"| ({v['condition']}) {v['name']} | {v['k'] or 'all'} | **{v['mean']:.3f}{spread}** | "
                    f"{v['n']} | {', '.join(f'{x:.3f}' for x in v['iou'])} |")
    rows.append("")
    for name, t in res.get("targets", {}).items():
        vals = ", ".join(f"{k} {v:+.3f}" if k in ("gain", "diff") else f"{k} {v:.3f}"
                         for k, v in t.items() if k != "met")
        rows.append(f"* {name}: {vals} → {'met' if t['met'] else 'not met'}")
    return "\n".join(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--k", type=int, nargs="+", default=[2])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--conditions", nargs="+", default=list("abcde"), choices=list("abcde"))
    ap.add_argument("--steps", type=int, default=400, help="segmenter optimizer steps, every condition")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--patch", type=int, default=256, help="patch side in input pixels")
    ap.add_argument("--context", type=int, default=1,
                    help="neighbour slices per side as input channels (0 = a 2D U-Net; synthetic pairs have "
                         "no neighbours, so with context their slice stands in for its neighbours)")
    ap.add_argument("--ratio", type=float, default=0.5, help="synthetic share of a batch in (b) and (e)")
    ap.add_argument("--gen-minutes", type=float, default=20.0, help="denoiser budget of the k-slice generator")
    ap.add_argument("--base-generator", default="mito-gen", help="whose VAE the k-slice generator keeps")
    ap.add_argument("--n-synth", type=int, default=200, help="synthetic pairs per generator")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--work", type=Path, default=HERE.parent / "runs" / "synthetic_gain")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "synthetic_gain.json")
    ap.add_argument("--markdown", action="store_true", help="print the results in --out as markdown; run nothing")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(args.out.read_text())))
        return

    import tifffile

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"
    images, masks = args.data / "training.tif", args.data / "training_groundtruth.tif"
    val_img = tifffile.imread(images)[VAL[0] : VAL[1]]
    val_gt = tifffile.imread(masks)[VAL[0] : VAL[1]] > 0
    res = json.loads(args.out.read_text()) if args.out.exists() else {}
    if res.get("work") != str(work):
        res = {}
    res.update(
        protocol={
            "validation_slices": f"{VAL[0]}-{VAL[1] - 1}",
            "segmenter": {"init": "scratch", "steps": args.steps, "batch": args.batch, "patch": args.patch,
                          "architecture": f"U-Net base 16, depth 4, scale 0.5, context {args.context}"},
            "synthetic_ratio": args.ratio,
            "n_synth": args.n_synth,
            "generator_minutes": args.gen_minutes,
            "conditions": NAMES,
        },
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs, no GPU" if not _has_cuda() else platform.machine(),
        work=str(work),
    )
    res.setdefault("runs", [])
    res.setdefault("generators", {})
    res.setdefault("timings_s", {})
    done = {(r["k"], r["condition"], r["seed"]) for r in res["runs"]}

    def save():
        res["summary"] = summarise(res["runs"])
        res["targets"] = targets(res["summary"], args.k)
        res.update(stamp(argv))
        write_json(args.out, res)

    synth = {}
    for k in args.k if set(args.conditions) & set("abc") else []:
        sl = spread(k)
        gen = work / f"gen_k{k}"
        if set(args.conditions) & set("bc"):
            if not (gen / "denoiser" / "card.json").exists():
                res["timings_s"][f"generator_k{k}"] = cellgen(
                    "train-generator", "--images", images, "--masks", masks, "-o", gen,
                    "--slices", ",".join(map(str, sl)), "--val-slices", f"{VAL[0]}-{VAL[1] - 1}",
                    "--init", args.base_generator, "--vae-steps", 0, "--fresh-denoiser",
                    "--diffusion-minutes", args.gen_minutes, "--threads", args.threads, "--quiet", log=log)
            card = json.loads((gen / "denoiser" / "card.json").read_text())
            res["generators"][f"k{k}"] = {"path": str(gen), "generator": generator_ref(gen),
                                          "mask_slices": card["training"]["mask_slices"],
                                          "denoiser_steps": card.get("metrics", {}).get("step"),
                                          "metrics": card.get("metrics")}
            synth[k] = work / f"synth_k{k}"
            if not (synth[k] / "synth.json").exists():
                res["timings_s"][f"synth_k{k}"] = cellgen(
                    "synth", "-o", synth[k], "--n", args.n_synth, "--generator", gen, "--seed", 0,
                    "--threads", args.threads, "--quiet", log=log)
            save()
    if "e" in args.conditions:
        synth["full"] = work / "synth_full"
        res["generators"]["full"] = {"generator": generator_ref(args.base_generator)}
        if not (synth["full"] / "synth.json").exists():
            res["timings_s"]["synth_full"] = cellgen(
                "synth", "-o", synth["full"], "--n", args.n_synth, "--generator", args.base_generator,
                "--seed", 0, "--threads", args.threads, "--quiet", log=log)

    common = ["--images", images, "--masks", masks, "--init", "scratch", "--steps", args.steps,
              "--batch", args.batch, "--patch", args.patch, "--context", args.context, "--val-fraction", 0,
              "--no-register",
              "--threads", args.threads, "--quiet"]
    for seed in args.seeds:
        for k in args.k:
            for cond in args.conditions:
                kk = k if cond in "abc" else 0
                if (kk, cond, seed) in done or (cond in "de" and k != args.k[0]):
                    continue
                out = work / "models" / ((f"k{kk}_" if kk else "") + f"{cond}_s{seed}")
                extra = ["--slices", ",".join(map(str, spread(k))) if cond in "abc" else f"0-{VAL[0] - 1}"]
                if cond in "bc":
                    extra += ["--synthetic", synth[k], "--synthetic-ratio", args.ratio if cond == "b" else 1.0]
                if cond == "e":
                    extra += ["--synthetic", synth["full"], "--synthetic-ratio", args.ratio]
                secs = cellgen("train", *common, "--seed", seed, "-o", out, *extra, log=log)
                iou = evaluate(out, val_img, val_gt)
                print(f"  k={kk or 'all'} ({cond}) seed {seed}: IoU {iou:.4f}  [{secs:.0f} s]", flush=True)
                res["runs"].append({"k": kk, "condition": cond, "seed": seed, "iou": iou, "train_s": secs,
                                    "model_dir": str(out), "model": model_ref(out)})
                done.add((kk, cond, seed))
                save()
    save()
    plot(res["summary"], args.out.with_suffix(".png"))
    print(json.dumps({"summary": {k: (round(v["mean"], 4), round(v["std"], 4), v["n"])
                                  for k, v in res["summary"].items()}, "targets": res["targets"]}, indent=2))


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    main()
