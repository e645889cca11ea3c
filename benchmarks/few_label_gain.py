"""Do generated pairs pay off when a NEW volume has only a few labelled slices? (issue 16, item 4)

The new volume: Lucchi ``training.tif`` slices 140-164 (never trained on by the shipped
segmenter or generator, which saw 0-139; undegraded, they were the segmenter's validation block,
its checkpoint chosen by IoU on them) as if acquired "on another microscope":

* section thickness (``--thickness N``, default 2): each section is the mean of N consecutive
  source slices (a sliding window, so the block keeps 25 - N + 1 sections); its mask is the
  voxels present in at least half of them (N = 2: the union, the projection a thick section shows);
* then ``finetune_gain.degrade`` (``--degradation``, default ``strong``): resampled to 0.5x
  (5 -> 10 nm pixels), Gaussian blur sigma 1 px, gamma 0.5, Gaussian noise sigma 30 grey levels,
  one fixed noise draw (seed 0) for every run.

Split, fixed before any run and never changed by a result (the block is short, so nothing is tuned
on it: the defaults below were set before the first full run):

* evaluation = the last ``--n-eval`` sections (default 12);
* gap = the ``N - 1`` sections before them, which share a source slice with the first evaluation
  section: used by nothing;
* pool = every section before the gap (11 with the defaults). Its images are the only images any
  training sees (generator adaptation and segmenter fine-tuning); evaluation images are only
  predicted (the whole block is segmented so evaluation sections have their real neighbours as
  2.5D context), never trained on, never used to select weights, steps or settings;
* labelled sections: k of the first ``--label-pool`` pool sections (default 10), drawn per seed
  (``numpy.random.default_rng(1000 + seed)``, nested: the k = 1 section is one of the k = 2 ones;
  two sections at least 3 apart). Only their masks are ever read.

Per (k, seed) three segmenter fine-tunings of the shipped segmenter (``--model``, default
``mito-unet``), with the SAME budget (``--steps`` optimizer steps x ``--batch`` patches of
``--patch`` input px, default lr, no validation: the last weights are kept):

  (a) the k labelled sections, standard augmentation (``TrainConfig`` defaults);
  (b) (a) + ``--pairs`` pairs from the adapted generator, ``--ratio`` of every batch (default 0.5):
      the shipped generator (``--generator``, default ``mito-gen``) adapted with ``cellgen
      train-generator --generator mito-gen --minutes M --pixel-size P`` on the images of ALL pool
      sections and the masks of the k labelled sections only, then ``cellgen synth`` (25 denoising
      steps, guidance 2): every pair has a NEW mask layout drawn from object statistics fitted on
      the k masks (``generate/layout.py``: no mask is copied) and an image generated for it.
      ``--adapt acquisition`` (default, the CLI's default from a generator): the networks are kept
      and the microscope is fitted on the pool images (pixel size ``--pixel-size``, default the
      volume's true 5 nm / resample; blur, grey levels, noise: ``generate/acquire.py``); tiles are
      generated at 5 nm and rendered to the volume's pixels. ``--adapt networks`` (the recorded
      2026-12-03 run): the VAE (40 % of the budget, unless ``--keep-vae``) and the denoiser are
      fine-tuned on the pool for M minutes;
  (c) (a) with only classic augmentation strengthened: ``TrainConfig.elastic_p`` raised to
      ``--c-elastic`` (default 0.8, (a): 0.3) and ``appearance`` to ``--c-appearance`` (default
      1.0; (a): 0, off). A gain of (b) over (a) that (c) matches is "more augmentation".

Seeds (default 0 1 2) vary the labelled sections, the segmenter's seed, the generator's training
seed and the synth seed. ``--generator-per run`` (default) adapts one generator per (k, seed) on
that seed's masks; ``--generator-per k`` draws the labelled sections once per k (seed 0's draw)
and shares one generator per k, seeds then vary only the training and synth seeds.

Metric: foreground IoU (threshold 0.5) pooled over the evaluation sections; reported per run, as
mean ± std over seeds per (k, arm), and as the paired differences (b)-(a) and (c)-(a) per seed
(mean ± std). The shipped segmenter without fine-tuning is reported too ("before"). Target
(issue 16): (b) - (a) >= +0.05.

Results are written after every run; ``--resume`` skips finished runs (and finished generators
and synthetic sets) of the same protocol in the same ``--work``.

    python benchmarks/few_label_gain.py                    # k=1,2, 3 seeds: ~1 h 45 min on 2 idle cores
                                                           # (6 x 8 min adapting; far longer on shared cores)
    python benchmarks/few_label_gain.py --resume           # continue after an interruption
    python benchmarks/few_label_gain.py --ks 1 --seeds 0 --steps 3 --minutes 0.2 --pairs 4 \\
        --work /tmp/flg --out /tmp/flg/few_label_gain.json       # smoke test (a few minutes)
    python benchmarks/few_label_gain.py --markdown         # print the table of --out
    python benchmarks/few_label_gain.py --model /tmp/v3 --arms b --pairs 100 --generator-per k \
        --reuse benchmarks/results/few_label_gain.json --out benchmarks/results/few_label_gain_acquisition.json
        # arm (b) with the acquisition adaptation; arms (a), (c) taken from the recorded run (same
        # segmenter v3, volume, split and budget). v3 (weights 9eae721251eb, trained on 0-139):
        #   mkdir /tmp/v3 && for f in card.json model.safetensors; do git show \
        #   eb45079^:src/napari_cellgen/_data/models/mito-unet/$f > /tmp/v3/$f; done

Writes ``benchmarks/results/few_label_gain.json``, ``.md`` (the table) and ``.png`` (the plot).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
from _provenance import check_unseen, generator_ref, model_ref, stamp, write_json  # benchmarks/ is on sys.path
from finetune_gain import PRESETS, degrade, iou_on
from synthetic_gain import cellgen

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "lucchi"
BLOCK = (140, 165)
ARMS = {
    "a": "k labelled sections",
    "b": "(a) + adapted generator's pairs",
    "c": "(a) + stronger classic augmentation",
}
COLOURS = {"a": "#4c72b0", "b": "#55a868", "c": "#c44e52"}
TARGET = 0.05
# seconds on 2 idle CPU cores, only for the printed estimate: a fine-tuning step of mito-unet (batch 8,
# 128 model px) ~0.4 s (correction_loop_*.json: 400 steps in 150 s; smoke run: 3 steps in 1.5 s), a
# synth pair ~0.6 s (synthetic_gain.json: 200 in 124 s), ~25 s per adaptation beyond its budget (process
# starts, encoding, noise estimate; smoke run), a generator training step ~1 s (a guess), one evaluation
# (24 sections) ~2 s. Another job on the same cores makes steps 3-10x slower (smoke runs: 1.5-8 s/step).
COST = {"step_per_patch": 0.05, "synth_pair": 0.6, "gen_overhead": 30.0, "gen_step": 1.0, "eval": 3.0}


# ---------------------------------------------------------------- the new volume and its split


def thicken(img: np.ndarray, mask: np.ndarray, n: int):
    """Sections n source slices thick (sliding mean); a mask voxel is in when in >= half of them."""
    if n <= 1:
        return img, mask
    z = img.shape[0] - n + 1
    im = np.stack([img[i : i + n].astype(np.float32).mean(0) for i in range(z)])
    m = np.stack([(mask[i : i + n] > 0).mean(0) >= 0.5 for i in range(z)])
    return np.round(im).astype(np.uint8), m.astype(np.uint8)


def split(n: int, thickness: int, n_eval: int, label_pool: int) -> dict:
    gap = max(0, thickness - 1)
    pool = list(range(n - n_eval - gap))
    if len(pool) < 2:
        raise SystemExit(f"{n} sections leave no pool for {n_eval} evaluation sections and a gap of {gap}")
    return {"n_sections": n, "eval": list(range(n - n_eval, n)), "gap": list(range(n - n_eval - gap, n - n_eval)),
            "pool": pool, "label_pool": pool[: min(label_pool, len(pool))]}


def labelled(seed: int, k: int, label_pool: list[int]) -> list[int]:
    """k labelled sections for ``seed``: nested in k, the second >= 3 sections from the first."""
    order = [int(z) for z in np.random.default_rng(1000 + seed).permutation(label_pool)]
    chosen = [order[0]]
    for z in order[1:]:
        if len(chosen) >= k:
            break
        if all(abs(z - c) >= 3 for c in chosen):
            chosen.append(z)
    if len(chosen) < k:
        raise SystemExit(f"cannot draw {k} sections 3 apart from {label_pool}")
    return sorted(chosen)


# ---------------------------------------------------------------- steps


def arm_c_settings(elastic: float, appearance: float) -> dict:
    from napari_cellgen.train.loop import TrainConfig

    a = TrainConfig()
    return {"elastic_p": elastic, "appearance": appearance,
            "defaults_in_a": {"elastic_p": a.elastic_p, "appearance": a.appearance},
            "used": "appearance + elastic_p"}


def fit(init, image, mask, zs, out_dir, *, steps, batch, patch, seed, threads, synthetic=None, ratio=0.0,
        augment=None):
    """Fine-tune ``init`` on sections ``zs`` (no validation, last weights kept); returns (model, card, info)."""
    from napari_cellgen._progress import run
    from napari_cellgen.models.store import load_model
    from napari_cellgen.train.loop import (
        TrainConfig,
        base_model_info,
        default_lr,
        patch_at_model_scale,
        train_model,
    )

    info = base_model_info(init)
    cfg = TrainConfig(init=init, steps=steps, batch=batch, lr=default_lr(init), val_fraction=0.0,
                      val_every=10**9, seed=seed, threads=threads,
                      patch=patch_at_model_scale(patch, info["scale"], info["depth"]),
                      synthetic_ratio=ratio if synthetic is not None else 0.0, name=Path(out_dir).name)
    if augment:
        cfg.elastic_p, cfg.appearance = augment["elastic_p"], augment["appearance"]
    losses = []
    t0 = time.perf_counter()
    run(train_model([(image, mask, list(zs))], out_dir, cfg, synthetic=synthetic),
        lambda p: losses.append(p.info["loss"]) if p.info and "loss" in p.info else None)
    dt = time.perf_counter() - t0
    model, card = load_model(out_dir)
    return model, card, {"train_s": dt, "lr": cfg.lr, "patch_model_px": cfg.patch,
                         "elastic_p": cfg.elastic_p, "appearance": cfg.appearance,
                         "synthetic_per_batch": int(round(batch * cfg.synthetic_ratio)),
                         "loss_first10": float(np.mean(losses[:10])) if losses else None,
                         "loss_last10": float(np.mean(losses[-10:])) if losses else None}


# ---------------------------------------------------------------- results


def summarise(runs: list[dict]) -> dict:
    out = {}
    for r in runs:
        out.setdefault(f"k{r['k']}_{r['arm']}", {"k": r["k"], "arm": r["arm"], "name": ARMS[r["arm"]],
                                                  "seeds": [], "iou": []})
        v = out[f"k{r['k']}_{r['arm']}"]
        v["seeds"].append(r["seed"])
        v["iou"].append(r["iou"])
    for v in out.values():
        v["n"] = len(v["iou"])
        v["mean"] = float(np.mean(v["iou"]))
        v["std"] = float(np.std(v["iou"], ddof=1)) if v["n"] > 1 else 0.0
    return out


def differences(runs: list[dict]) -> dict:
    """(b)-(a) and (c)-(a) per k, paired by seed: per-seed values, mean, std; and the target check."""
    by = {(r["k"], r["arm"], r["seed"]): r["iou"] for r in runs}
    out = {}
    for k in sorted({r["k"] for r in runs}):
        for arm in "bc":
            seeds = sorted(s for (kk, a, s) in by if kk == k and a == arm and (k, "a", s) in by)
            if not seeds:
                continue
            d = [by[(k, arm, s)] - by[(k, "a", s)] for s in seeds]
            v = {"seeds": seeds, "per_seed": d, "mean": float(np.mean(d)),
                 "std": float(np.std(d, ddof=1)) if len(d) > 1 else 0.0, "n": len(d)}
            if arm == "b":
                v["target"] = TARGET
                v["met"] = v["mean"] >= TARGET
            out[f"k{k}_{arm}_minus_a"] = v
    return out


def plot(res: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    summary, diffs = res["summary"], res["differences"]
    ks = sorted({v["k"] for v in summary.values()})
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(4.5 + 2.2 * len(ks), 4.2), gridspec_kw={"width_ratios": [3, 2]})
    for j, k in enumerate(ks):
        for i, arm in enumerate("abc"):
            v = summary.get(f"k{k}_{arm}")
            if not v:
                continue
            x = j * 4 + i
            ax.bar(x, v["mean"], yerr=v["std"], color=COLOURS[arm], capsize=4, label=ARMS[arm] if j == 0 else None)
            ax.scatter([x] * v["n"], v["iou"], color="k", s=8, zorder=3)
    before = res.get("before", {}).get("iou")
    if before is not None:
        ax.axhline(before, color="grey", ls="--", lw=1, label=f"shipped, not fine-tuned ({before:.3f})")
    ax.set_xticks([j * 4 + 1 for j in range(len(ks))])
    ax.set_xticklabels([f"k = {k}" for k in ks])
    ax.set_ylabel("IoU, evaluation sections")
    lo = min([before or 1.0] + [min(v["iou"]) for v in summary.values()])
    ax.set_ylim(max(0.0, lo - 0.1), 1.0)
    ax.set_title("fine-tuned on k labelled sections of the new volume", fontsize=9)
    for j, k in enumerate(ks):
        for i, arm in enumerate("bc"):
            v = diffs.get(f"k{k}_{arm}_minus_a")
            if not v:
                continue
            x = j * 3 + i
            bx.bar(x, v["mean"], yerr=v["std"], color=COLOURS[arm], capsize=4)
            bx.scatter([x] * v["n"], v["per_seed"], color="k", s=8, zorder=3)
    bx.axhline(0, color="k", lw=0.8)
    bx.axhline(TARGET, color=COLOURS["b"], ls=":", lw=1, label=f"target (b)-(a) = +{TARGET}")
    bx.set_xticks([j * 3 + i for j in range(len(ks)) for i in range(2)])
    bx.set_xticklabels([f"{a}-a\nk={k}" for k in ks for a in "bc"], fontsize=8)
    bx.set_ylabel("IoU difference (paired by seed)")
    handles = [h for a in (ax, bx) for h in a.get_legend_handles_labels()[0]]
    fig.legend(handles=handles, fontsize=7, loc="lower center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(res: dict) -> str:
    p = res["protocol"]
    seg, gen, vol, c = p["segmenter"], p["generator"], p["volume"], p["arm_c"]
    budget = " ".join(x for x in (f"{gen['minutes']} min" if gen["minutes"] else "",
                                  f"<= {gen['diffusion_steps']} denoiser steps" if gen.get("diffusion_steps") else "")
                      if x)
    how = ("networks kept, acquisition fitted at " f"{gen['pixel_size_nm']:g} nm" if gen.get("adapt") == "acquisition"
           else "VAE kept" if gen["keep_vae"] else "VAE + denoiser")
    if gen.get("adapt") == "acquisition" and res.get("generators"):
        secs = [g["train_s"] for g in res["generators"].values()]
        budget = f"in {min(secs):.0f}-{max(secs):.0f} s (budget {gen['minutes']} min, not needed)"
    rows = [
        f"New volume: {vol['source']}, {vol['thickness']}-slice-thick sections, degradation "
        f"'{vol['degradation']['preset']}' -> {vol['degraded_shape']}; evaluation sections "
        f"{p['split']['eval'][0]}-{p['split']['eval'][-1]}, pool {p['split']['pool'][0]}-{p['split']['pool'][-1]}.",
        f"Segmenter: {seg['init']['label']} fine-tuned {seg['steps']} steps x batch {seg['batch']}, patch "
        f"{seg['patch']} px, every arm. Generator: {gen['init']['label']} adapted {budget} "
        f"({how}; one per {gen['per']}), {gen['pairs']} pairs, "
        f"share {p['synthetic_ratio']} of each batch. (c): {c['used']}, elastic_p {c['elastic_p']}"
        f", appearance {c['appearance']}.",
        "",
        "| k | arm | IoU mean ± std | seeds | per seed |",
        "| --- | --- | --- | --- | --- |",
    ]
    if res.get("before"):
        rows.append(f"| - | shipped segmenter, not fine-tuned | {res['before']['iou']:.3f} | - | - |")
    for key in sorted(res["summary"], key=lambda s: (res["summary"][s]["k"], res["summary"][s]["arm"])):
        v = res["summary"][key]
        sd = f" ± {v['std']:.3f}" if v["n"] > 1 else ""
        rows.append(f"| {v['k']} | ({v['arm']}) {v['name']} | **{v['mean']:.3f}{sd}** | {v['n']} | "
                    f"{', '.join(f'{x:.3f}' for x in v['iou'])} |")
    rows += ["", "| k | difference | mean ± std (paired by seed) | per seed | target |",
             "| --- | --- | --- | --- | --- |"]
    for key, v in res["differences"].items():
        k, arm = key.split("_")[0][1:], key.split("_")[1]
        target = (f"≥ +{v['target']}: {'met' if v['met'] else 'not met'}") if "target" in v else "-"
        rows.append(f"| {k} | ({arm}) - (a) | {v['mean']:+.3f} ± {v['std']:.3f} | "
                    f"{', '.join(f'{x:+.3f}' for x in v['per_seed'])} | {target} |")
    return "\n".join(rows) + "\n"


def reuse(res: dict, old: dict, protocol: dict, args) -> None:
    """Copy into ``res`` the runs of ``old`` for arms not in ``--arms``, if ``old`` measured the same thing."""
    def same(p: dict) -> dict:  # the segmenter by its weights, arm (c) by its settings
        seg = {**p.get("segmenter", {}), "init": p.get("segmenter", {}).get("init", {}).get("weights_sha256")}
        c = {k: p.get("arm_c", {}).get(k) for k in ("elastic_p", "appearance")}
        return {"volume": p.get("volume"), "split": p.get("split"), "segmenter": seg, "arm_c": c,
                "synthetic_ratio": p.get("synthetic_ratio"), "threshold": p.get("threshold")}

    a, b = same(old.get("protocol", {})), same(protocol)
    diff = [k for k in a if a[k] != b[k]]
    if diff:
        raise SystemExit(f"--reuse {args.reuse}: its protocol differs in {', '.join(diff)}; rerun those arms")
    have = {(r["k"], r["seed"], r["arm"]) for r in res["runs"]}
    for r in old.get("runs", []):
        if r["arm"] not in args.arms and r["k"] in args.ks and r["seed"] in args.seeds and \
                (r["k"], r["seed"], r["arm"]) not in have:
            res["runs"].append({**r, "reused_from": str(args.reuse)})
            if protocol["labelled"].get(f"k{r['k']}_s{r['seed']}") != r["labelled"]:
                raise SystemExit(f"--reuse: k={r['k']} seed {r['seed']} labelled other sections there")
    if "before" in old:
        res.setdefault("before", old["before"])


def estimate(args, n_gen: int, n_runs: int) -> float:
    """Seconds for the whole run, from the per-unit costs in COST."""
    patches = args.steps * args.batch
    gen_s = 60 * args.minutes if args.minutes else COST["gen_step"] * (args.diffusion_steps + (args.vae_steps or 0))
    pair_s = COST["synth_pair"]
    if args.adapt == "acquisition":  # a minute or two; tiles generated at 5 nm: (5 / pixel size)^-2 the area
        gen_s, pair_s = 90.0, pair_s * (PRESETS[args.degradation]["resample"] ** -2)
    return (n_gen * (gen_s + COST["gen_overhead"] + args.pairs * pair_s)
            + n_runs * (patches * COST["step_per_patch"] + COST["eval"]) + COST["eval"])


# ---------------------------------------------------------------- main


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 2], help="labelled sections")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=list("abc"), choices=list("abc"))
    ap.add_argument("--degradation", choices=sorted(PRESETS), default="strong")
    ap.add_argument("--thickness", type=int, default=2, help="source slices per section (1: as acquired)")
    ap.add_argument("--n-eval", type=int, default=12, help="evaluation sections (the last ones)")
    ap.add_argument("--label-pool", type=int, default=10, help="labelled sections come from the first N")
    ap.add_argument("--model", default="mito-unet", help="the shipped segmenter (starting point)")
    ap.add_argument("--generator", default="mito-gen", help="the shipped generator (starting point)")
    ap.add_argument("--steps", type=int, default=300, help="segmenter optimizer steps, every arm")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--patch", type=int, default=256, help="patch side in input pixels")
    ap.add_argument("--ratio", type=float, default=0.5, help="generated share of every batch in (b)")
    ap.add_argument("--minutes", type=float, default=8.0,
                    help="generator adaptation budget (wall clock; 0: the step counts below rule)")
    ap.add_argument("--vae-steps", type=int, default=None,
                    help="VAE adaptation steps (an upper bound under --minutes; needed with --minutes 0)")
    ap.add_argument("--diffusion-steps", type=int, default=None,
                    help="denoiser adaptation steps (an upper bound under --minutes; needed with --minutes 0)")
    ap.add_argument("--adapt", choices=("acquisition", "networks"), default="acquisition",
                    help="how train-generator adapts the generator (see above)")
    ap.add_argument("--pixel-size", type=float, default=None,
                    help="the volume's pixel size in nm given to train-generator (default 5 / resample)")
    ap.add_argument("--reuse", type=Path, default=None,
                    help="take the runs of the arms not in --arms from this result file (same volume, split, "
                         "segmenter and budget)")
    ap.add_argument("--keep-vae", action="store_true",
                    help="adapt only the denoiser (default: VAE 40 %% of --minutes, then the denoiser)")
    ap.add_argument("--generator-per", choices=("run", "k"), default="run",
                    help="one adapted generator per (k, seed) or per k (labelled sections fixed per k)")
    ap.add_argument("--pairs", type=int, default=200, help="generated pairs per adapted generator")
    ap.add_argument("--c-elastic", type=float, default=0.8, help="(c): elastic deformation probability")
    ap.add_argument("--c-appearance", type=float, default=1.0,
                    help="(c): TrainConfig.appearance, when that field exists")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--keep-models", action=argparse.BooleanOptionalAction, default=True,
                    help="keep the fine-tuned segmenters in --work")
    ap.add_argument("--work", type=Path, default=HERE.parent / "runs" / "few_label_gain")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "few_label_gain.json")
    ap.add_argument("--resume", action="store_true", help="skip the finished runs recorded in --out")
    ap.add_argument("--markdown", action="store_true", help="print the table of --out; run nothing")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(args.out.read_text())), end="")
        return
    if not args.minutes and (args.diffusion_steps is None or (args.vae_steps is None and not args.keep_vae)):
        ap.error("--minutes 0 needs --diffusion-steps (and --vae-steps unless --keep-vae)")

    import tifffile
    import torch

    from napari_cellgen.models.store import load_model, resolve

    torch.set_num_threads(args.threads)
    os.environ.setdefault("CELLGEN_USER_DIR", str(args.work / "user"))  # nothing lands in the user's folders
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"

    lo, hi = BLOCK
    check_unseen(args.model, range(lo, hi))
    src_img = tifffile.imread(args.data / "training.tif")[lo:hi]
    src_gt = tifffile.imread(args.data / "training_groundtruth.tif")[lo:hi]
    thick_img, thick_gt = thicken(src_img, src_gt, args.thickness)
    vol, gt = degrade(thick_img, thick_gt, PRESETS[args.degradation], 0)
    sp = split(vol.shape[0], args.thickness, args.n_eval, args.label_pool)
    pool, ev = sp["pool"], sp["eval"]
    pixel_nm = args.pixel_size or 5.0 / PRESETS[args.degradation]["resample"]
    draws = {(k, s): labelled(s if args.generator_per == "run" else 0, k, sp["label_pool"])
             for k in args.ks for s in args.seeds}
    arm_c = arm_c_settings(args.c_elastic, args.c_appearance)
    protocol = {
        "volume": {"source": f"Lucchi training.tif slices {lo}-{hi - 1} (never trained on by the shipped models)",
                   "thickness": args.thickness, "degradation": {"preset": args.degradation,
                                                               **PRESETS[args.degradation]},
                   "noise_seed": 0, "degraded_shape": list(vol.shape)},
        "split": {**sp, "note": "only pool images are trained on; only labelled masks are read; eval sections "
                                "are predicted and scored, nothing else"},
        "labelled": {f"k{k}_s{s}": z for (k, s), z in draws.items()},
        "segmenter": {"init": model_ref(args.model), "steps": args.steps, "batch": args.batch,
                      "patch": args.patch, "selection": "last weights (no validation)"},
        "generator": {"init": generator_ref(args.generator), "adapt": args.adapt,
                      "pixel_size_nm": pixel_nm if args.adapt == "acquisition" else None,
                      "minutes": args.minutes, "keep_vae": args.keep_vae,
                      "vae_steps": 0 if args.keep_vae else args.vae_steps, "diffusion_steps": args.diffusion_steps,
                      "per": "(k, seed)" if args.generator_per == "run" else "k", "pairs": args.pairs,
                      "val_slices": "none (validates on its own training sections)",
                      "layouts": "new, drawn from object statistics fitted on the k masks (synth)"},
        "synthetic_ratio": args.ratio,
        "arms": ARMS,
        "arm_c": arm_c,
        "threshold": 0.5,
    }
    res = json.loads(args.out.read_text()) if args.resume and args.out.exists() else {}
    if res:  # the same protocol; other --ks / --seeds may be added (their draws do not depend on each other)
        old = res.get("protocol", {})
        same = {k: v for k, v in old.items() if k != "labelled"} == {k: v for k, v in protocol.items()
                                                                      if k != "labelled"}
        clash = any(old.get("labelled", {}).get(key, z) != z for key, z in protocol["labelled"].items())
        if not same or clash or res.get("work") != str(work):
            raise SystemExit(f"--resume: {args.out} was written with another protocol or --work; "
                             "rerun without --resume (or with the same options)")
        protocol["labelled"] = {**old.get("labelled", {}), **protocol["labelled"]}
    res.update(what="few labels on a new volume: fine-tune (a) alone, (b) + adapted generator's pairs, "
                    "(c) + stronger classic augmentation; same segmenter budget",
               protocol=protocol, work=str(work),
               machine={"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "python": platform.python_version(), "torch": torch.__version__,
                        "cuda": torch.cuda.is_available()})
    res.setdefault("runs", [])
    if args.reuse:
        reuse(res, json.loads(args.reuse.read_text()), protocol, args)
    res.setdefault("generators", {})
    res.setdefault("timings_s", {})
    done = {(r["k"], r["seed"], r["arm"]) for r in res["runs"]}

    def save():
        res["summary"] = summarise(res["runs"])
        res["differences"] = differences(res["runs"])
        res.update(stamp(argv))
        write_json(args.out, res)
        args.out.with_suffix(".md").write_text(markdown(res))

    todo = [(k, s, a) for s in args.seeds for k in args.ks for a in args.arms if (k, s, a) not in done]
    def gen_name(k, seed):
        return f"k{k}" + (f"_s{seed}" if args.generator_per == "run" else "")

    need_gen = {gen_name(k, s) for k, s, a in todo if a == "b"}
    need_gen = {n for n in need_gen if not (n in res["generators"] and (work / f"synth_{n}" / "synth.json").exists())}
    secs = estimate(args, len(need_gen), len(todo))
    print(f"new volume {vol.shape}, eval sections {ev[0]}-{ev[-1]}, pool {pool[0]}-{pool[-1]}; "
          f"{len(todo)} fine-tunings and {len(need_gen)} generator adaptations to do: "
          f"about {secs / 60:.0f} min on 2 idle CPU cores (estimate; longer when the cores are shared)", flush=True)

    # the volume as files (for the cellgen commands and for the record)
    vdir = work / "volume"
    vdir.mkdir(exist_ok=True)
    tifffile.imwrite(vdir / "pool_images.tif", vol[pool])
    train_img = vol[pool]  # everything a training ever sees; masks are zeroed outside the labelled sections

    if "before" not in res:
        model, card = load_model(args.model)
        t0 = time.perf_counter()
        res["before"] = iou_on(model, card, vol, gt, ev)
        res["timings_s"]["eval"] = time.perf_counter() - t0
        print(f"shipped segmenter, not fine-tuned: IoU {res['before']['iou']:.4f}", flush=True)
        save()
    model_dir = str(resolve(args.model))

    def generator_for(k, seed):
        name = gen_name(k, seed)
        zs = draws[(k, seed)]
        gen, syn = work / f"gen_{name}", work / f"synth_{name}"
        rec = res["generators"].get(name)
        if rec and (syn / "synth.json").exists():  # built in this run, or recorded in --out (--resume)
            return syn, rec
        for d in (gen, syn):
            shutil.rmtree(d, ignore_errors=True)
        masks = np.zeros(train_img.shape, np.uint8)
        masks[zs] = gt[pool][zs]
        tifffile.imwrite(vdir / f"masks_{name}.tif", masks)
        gseed = 100 * k + (seed if args.generator_per == "run" else 0)
        t_gen = cellgen("train-generator", "--images", vdir / "pool_images.tif", "--masks", vdir / f"masks_{name}.tif",
                        "-o", gen, "--slices", ",".join(map(str, zs)), "--val-slices", "none",
                        "--generator", args.generator, "--minutes", args.minutes, "--adapt", args.adapt,
                        *(["--pixel-size", pixel_nm] if args.adapt == "acquisition" else
                          ["--vae-steps", 0] if args.keep_vae else
                          ["--vae-steps", args.vae_steps] if args.vae_steps is not None else []),
                        *(["--diffusion-steps", args.diffusion_steps] if args.diffusion_steps is not None else []),
                        "--seed", gseed, "--threads", args.threads, "--quiet", log=log)
        t_syn = cellgen("synth", "-o", syn, "--n", args.pairs, "--generator", gen, "--seed", gseed,
                        "--threads", args.threads, "--quiet", log=log)
        card = json.loads((gen / "denoiser" / "card.json").read_text())
        vcard = json.loads((gen / "vae" / "card.json").read_text())
        rec = {"labelled": zs, "path": str(gen), "generator": generator_ref(gen), "seed": gseed,
               "mask_slices": card["training"]["mask_slices"], "image_slices": card["training"]["image_slices"],
               "layout_objects": len(json.loads((gen / "layout.json").read_text()).get("objects", [])),
               "denoiser_steps": card["training"].get("steps_done"), "budget": card["training"].get("budget"),
               "denoiser_metrics": card.get("metrics"), "vae_noise_std": vcard.get("noise_std"),
               "train_s": t_gen, "synth_s": t_syn, "synth": str(syn)}
        res["generators"][name] = rec
        save()
        return syn, rec

    t_start = time.perf_counter()
    for i, (k, seed, arm) in enumerate(todo):
        zs = draws[(k, seed)]
        masks = np.zeros(train_img.shape, np.uint8)
        masks[zs] = gt[pool][zs]
        synthetic = None
        extra = {}
        if arm == "b":
            syn, grec = generator_for(k, seed)
            from napari_cellgen.generate.synth import read_synthetic_set

            s_img, s_mask, _ = read_synthetic_set(syn)
            synthetic = (s_img, s_mask)
            extra = {"generator": grec["generator"]["label"], "synthetic_pairs": int(s_img.shape[0])}
        out = work / "models" / f"k{k}_s{seed}_{arm}"
        shutil.rmtree(out, ignore_errors=True)
        model, card, info = fit(model_dir, train_img, masks, zs, out, steps=args.steps, batch=args.batch,
                                patch=args.patch, seed=seed, threads=args.threads, synthetic=synthetic,
                                ratio=args.ratio, augment=arm_c if arm == "c" else None)
        t0 = time.perf_counter()
        score = iou_on(model, card, vol, gt, ev)
        eval_s = time.perf_counter() - t0
        row = {"k": k, "seed": seed, "arm": arm, "labelled": zs, **score, **info, "eval_s": eval_s,
               "model": model_ref(out), **extra}
        if not args.keep_models:
            shutil.rmtree(out, ignore_errors=True)
        res["runs"].append(row)
        done.add((k, seed, arm))
        save()
        left = len(todo) - i - 1
        el = time.perf_counter() - t_start
        print(f"  k={k} seed {seed} ({arm}) sections {zs}: IoU {score['iou']:.4f}  [train {info['train_s']:.0f} s, "
              f"{info['train_s'] / args.steps:.2f} s/step; {el / 60:.0f} min so far, {left} runs left, "
              f"~{el / (i + 1) * left / 60:.0f} min at this pace]", flush=True)
    save()
    plot(res, args.out.with_suffix(".png"))
    print(markdown(res), end="")


if __name__ == "__main__":
    main()
