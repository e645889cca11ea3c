"""Install a model trained by the protocol as the shipped ``mito-unet`` (issue 15).

The protocol (``benchmarks/cv.py``) estimates a recipe by blocked cross-validation; the shipped
model is the same recipe trained on all 165 slices (``train_default.py --train-slices 0-164
--val-slices none --final DIR``), its last EMA weights. No slice is left to validate it on, so its
card carries the recipe's cross-validated IoU, read from the CV file, with the folds it covers:

    python benchmarks/ship_segmenter.py --model runs/final8k/last \\
        --cv benchmarks/results/cv_scratch8k_bf16.json --version 4

It checks that the model was trained with the CV file's recipe, copies the weights (safetensors)
into ``src/napari_cellgen/_data/models/mito-unet``, writes the card (code-written metrics:
``cv_iou_mean``, ``cv_iou_std``, ``cv_folds``, ``step``, ``selection``) and
``benchmarks/results/mito-unet_vN_card_notes.json`` (the weights' sha256, the CV folds, the
commands). Nothing is written when a check fails.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEST = REPO / "src" / "napari_cellgen" / "_data" / "models" / "mito-unet"
PIXEL_SIZE_NM = [5.0, 5.0, 5.0]  # Lucchi: 5 x 5 x 5 nm voxels (the data README)


def recipe_of(card: dict) -> dict:
    """A card's training config without what may differ between a CV fold and the final run."""
    c = card["training"]["config"]
    skip = ("tile", "overlap", "threads", "name", "val_fraction", "val_every", "pixel_size_nm")
    return {k: v for k, v in c.items() if k not in skip}


OPTION_KEYS = {"hard": "hard_prob"}  # train_default.py options whose config key differs


def recipe_mismatch(card: dict, options: list[str]) -> list[str]:
    """The ``--option value`` pairs of a CV recipe that the card's training config contradicts."""
    config = card["training"]["config"]
    wrong = []
    for flag, value in zip(options[::2], options[1::2], strict=False):
        key = flag.lstrip("-").replace("-", "_")
        key = OPTION_KEYS.get(key, key)
        have = config.get(key)
        try:
            same = float(have) == float(value)
        except (TypeError, ValueError):
            same = str(have) == value
        if not same:
            wrong.append(f"{flag} {value} (card: {have})")
    return wrong


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="the final run's exported last weights (a model folder)")
    ap.add_argument("--cv", type=Path, required=True, help="the recipe's CV result (benchmarks/cv.py)")
    ap.add_argument("--version", type=int, required=True)
    ap.add_argument("--cv-model", type=Path, default=None,
                    help="a CV fold's model of the same recipe (default: the first fold's), to compare recipes")
    ap.add_argument("--dest", type=Path, default=DEST)
    args = ap.parse_args(argv)

    card = json.loads((args.model / "card.json").read_text())
    cv = json.loads(args.cv.read_text())
    folds = cv.get("folds") or []
    if not folds:
        sys.exit(f"{args.cv} holds no finished fold")
    ref = args.cv_model or Path(folds[0]["model"]["given"])
    if (REPO / ref / "card.json").exists():
        ref_card = json.loads((REPO / ref / "card.json").read_text())
        if recipe_of(card) != recipe_of(ref_card):
            sys.exit(f"{args.model} was trained with {recipe_of(card)}, the CV folds with {recipe_of(ref_card)}")
    else:  # the fold models are gone (runs/ is not kept): check against the options the CV file records
        wrong = recipe_mismatch(card, cv.get("recipe") or [])
        if wrong:
            sys.exit(f"{args.model} was not trained with the CV recipe: {wrong}")
    tr = card["training"]
    if tr.get("val_slices_list") not in (None, "none") or tr.get("train_slices", 0) < 165:
        sys.exit(f"{args.model} did not train on all 165 slices without validation "
                 f"(train {tr.get('train_slices')}, val {tr.get('val_slices_list')})")

    ious = [f["iou"] for f in folds]
    summary = cv["summary"]
    card.update(
        name="mito-unet",
        version=args.version,
        pixel_size_nm=PIXEL_SIZE_NM,
        parent=None,
        description=(f"2.5D U-Net ({2 * card['context'] + 1} neighbouring slices), base "
                     f"{card['architecture']['base']}, depth {card['architecture']['depth']}, at "
                     f"{card['scale']} x resolution; mitochondria foreground probability"),
    )
    card["metrics"] = {
        "cv_iou_mean": summary["iou_mean"],
        "cv_iou_std": summary["iou_std"],
        "cv_folds": [f"{f['fold']}: held out {f['held_out']}" for f in folds],
        "step": card["metrics"]["step"],
        "selection": card["metrics"]["selection"],
    }
    notes_rel = f"benchmarks/results/mito-unet_v{args.version}_card_notes.json"
    card["results"] = [notes_rel, str(args.cv.resolve().relative_to(REPO))]
    notes = {
        "what": f"how mito-unet v{args.version} was made and what estimates its accuracy: the recipe's blocked "
                "cross-validation (contiguous slice blocks of the Lucchi training volume, each fold trained on "
                "the other blocks and scored on its held-out block with the whole pipeline); the shipped weights "
                "are the same recipe trained on all 165 slices, the last EMA weights, chosen by nothing",
        "model": {"name": "mito-unet", "version": args.version, "weights_sha256": card["weights_sha256"]},
        "cv": {"file": card["results"][1], "folds": [{"fold": f["fold"], "held_out": f["held_out"],
                                                     "iou": f["iou"]} for f in folds],
               "iou_mean": summary["iou_mean"], "iou_std": summary["iou_std"], "n_folds": len(ious),
               "command": cv.get("command")},
        "recipe": recipe_of(card),
        "training": {"train_slices": tr.get("train_slices"), "validation": "none",
                     "command": "python benchmarks/train_default.py --out runs/final8k/run --final runs/final8k/last "
                                "--train-slices 0-164 --val-slices none --tile 640 " + " ".join(cv.get("recipe", []))},
        "install": "python benchmarks/ship_segmenter.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    from napari_cellgen.models.store import atomic_write_bytes

    args.dest.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.dest / "model.safetensors", (args.model / "model.safetensors").read_bytes())
    atomic_write_bytes(args.dest / "card.json", (json.dumps(card, indent=2, default=str) + "\n").encode())
    atomic_write_bytes(REPO / notes_rel, (json.dumps(notes, indent=2) + "\n").encode())
    print(f"installed mito-unet v{args.version} ({card['weights_sha256'][:12]}) in {args.dest}: CV IoU "
          f"{summary['iou_mean']:.3f} +- {summary['iou_std']:.3f} over {len(ious)} folds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
