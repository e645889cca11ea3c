"""Apply the rule of ``device_travel.sh`` and, if a candidate wins, install it as ``mito-unet-travel``.

The rule, written before the candidates were trained: each candidate and the shipped travel model are
scored by ``transfer.py`` (block 140-164, strong and mild, pixel size told and not told) and
``thick_sections.py`` (thick strong and mild, told and not told); the candidate with the highest mean
over those 8 cells replaces the shipped model if that mean beats the shipped model's and it loses at
most 0.005 to it on the clean block. Nothing is installed otherwise, or with ``--dry-run``.

``--rule2 FILE``: the second decision (``probes/travel_second_rule.py``, written after the first rule
refused the best candidate for its clean-block cost alone, on surrogates no decision had used); when
it says the same candidate replaces the shipped model, that candidate is installed, and the card
notes keep both verdicts.

    python benchmarks/ship_travel.py --transfer benchmarks/results/transfer_travel2.json \\
        --thick benchmarks/results/thick_sections_travel2.json --version 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEST = REPO / "src" / "napari_cellgen" / "_data" / "models" / "mito-unet-travel"
SHIPPED = "mito-unet-travel"
MAX_CLEAN_LOSS = 0.005


def cells(transfer: dict, thick: dict) -> dict[str, dict[str, float]]:
    """``{model given: {cell: IoU}}``: the 8 degraded cells of the rule, plus ``clean`` (block 140-164)."""
    out: dict[str, dict[str, float]] = {}
    for m in transfer["models"]:
        given, cases = m["model"]["given"], m["cases"]
        row = out.setdefault(given, {})
        row["clean"] = cases["clean"]["without"]["iou"]
        for p in ("strong", "mild"):
            row[f"block {p} | not told"] = cases[p]["without"]["iou"]
            row[f"block {p} | told"] = cases[p]["with_pixel_size"]["iou"]
    for p in ("strong", "mild"):
        for key, v in thick["cases"][p].items():
            if isinstance(v, dict) and "iou" in v:
                given, how = key.rsplit(" | ", 1)
                told = "told" if how == "pixel size told" else "not told"
                out.setdefault(given, {})[f"thick {p} | {told}"] = v["iou"]
    return out


def decide(table: dict[str, dict[str, float]], shipped: str = SHIPPED) -> dict:
    degraded = lambda row: statistics.fmean(v for k, v in row.items() if k != "clean")  # noqa: E731
    for given, row in table.items():
        if len(row) != 9:
            raise SystemExit(f"{given}: {len(row)} of the 9 cells found; run transfer.py and thick_sections.py on it")
    means = {g: degraded(r) for g, r in table.items()}
    best = max((g for g in table if g != shipped), key=lambda g: means[g])
    wins = means[best] > means[shipped] and table[best]["clean"] >= table[shipped]["clean"] - MAX_CLEAN_LOSS
    return {"means_of_8_degraded_cells": means, "clean": {g: r["clean"] for g, r in table.items()},
            "best_candidate": best, "replaces_shipped": wins}


def candidate_folder(given: str, weights_sha256: str) -> Path:
    """The folder ``transfer.py`` was given (relative to where it ran: the current folder, the repository
    or benchmarks/), recognised by the sha256 of its weights, which the transfer results recorded."""
    import hashlib

    tried = []
    for base in (Path.cwd(), REPO, REPO / "benchmarks"):
        d = (base / given).resolve()
        tried.append(str(d))
        w = d / "model.safetensors"
        if (d / "card.json").is_file() and w.is_file() and hashlib.sha256(w.read_bytes()).hexdigest() == weights_sha256:
            return d
    raise SystemExit(f"cannot find the candidate {given!r} with weights sha256 {weights_sha256[:12]}... "
                     f"(tried {', '.join(tried)}): run from where transfer.py ran")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--transfer", type=Path, required=True)
    ap.add_argument("--thick", type=Path, required=True)
    ap.add_argument("--version", type=int, required=True)
    ap.add_argument("--dest", type=Path, default=DEST)
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--rule2", type=Path, default=None, help="the second decision's result (see above)")
    ap.add_argument("--verdict", type=Path, default=HERE / "results" / "travel_rule1.json",
                    help="where the cells and the verdict are written (always)")
    args = ap.parse_args(argv)
    transfer = json.loads(args.transfer.read_text())
    table = cells(transfer, json.loads(args.thick.read_text()))
    verdict = decide(table)
    print(json.dumps({"cells": table, **verdict}, indent=1))
    from _provenance import stamp, write_json

    write_json(args.verdict, {"what": "the rule of benchmarks/device_travel.sh applied to its candidates",
                              "max_clean_loss": MAX_CLEAN_LOSS, "cells": table, **verdict, **stamp(argv)})
    rule2 = json.loads(args.rule2.read_text()) if args.rule2 else None
    sha = {m["model"]["given"]: m["model"]["weights_sha256"] for m in transfer["models"]}
    by_rule2 = bool(rule2 and rule2["replaces_shipped"] and sha[verdict["best_candidate"]] in
                    {r["weights_sha256"] for g, r in rule2["models"].items() if g != SHIPPED})
    if not (verdict["replaces_shipped"] or by_rule2) or args.dry_run:
        passed = verdict["replaces_shipped"] or by_rule2
        print("nothing installed" + ("" if passed else ": no candidate passes the rule"))
        return 0
    src = candidate_folder(verdict["best_candidate"], sha[verdict["best_candidate"]])
    card = json.loads((src / "card.json").read_text())
    cfg = card["training"]["config"]
    card.update(
        name=SHIPPED, version=args.version, parent=None, pixel_size_nm=[5.0, 5.0, 5.0],
        description=(f"2.5D U-Net ({2 * card['context'] + 1} neighbouring slices), "
                     f"base {card['architecture']['base']}, depth {card['architecture']['depth']}, "
                     f"at {card['scale']} x resolution; mitochondria foreground probability. For EM that "
                     "does not look like the Lucchi FIB-SEM (other microscopes, "
                     f"noise, blur, contrast, thick sections): trained from scratch with appearance augmentation "
                     f"{cfg['appearance']}"),
    )
    rel = [str(p.resolve().relative_to(REPO)) for p in (args.transfer, args.thick)]
    notes_rel = f"benchmarks/results/mito-unet-travel_v{args.version}_card_notes.json"
    card["results"] = [notes_rel, *rel]
    card["metrics"] = {"step": card["metrics"]["step"], "selection": card["metrics"]["selection"],
                       "clean_block_140_164": table[verdict["best_candidate"]]["clean"],
                       "mean_of_8_degraded_cells": verdict["means_of_8_degraded_cells"][verdict["best_candidate"]]}
    if by_rule2:
        card["metrics"]["second_rule"] = {"mean_of_8_new_cells": rule2["mean_of_8_cells"],
                                          "clean_thick": rule2["clean_thick"]}
        card["results"].append(str(args.rule2.resolve().relative_to(REPO)))
    notes = {"what": f"how mito-unet-travel v{args.version} was chosen: the rule in benchmarks/device_travel.sh, "
                     "applied by benchmarks/ship_travel.py" + (", which refused it for its clean-block cost; then "
                     "the second rule of benchmarks/probes/travel_second_rule.py, which accepted it" if by_rule2 and
                     not verdict["replaces_shipped"] else ""), "cells": table, **verdict,
             "second_rule": rule2,
             "training": {"slices": card["training"].get("train_slices_list"), "device": card["training"].get("device"),
                          "command": "bash benchmarks/device_travel.sh (train_default.py, 8k recipe, "
                                     f"--appearance {cfg['appearance']}, --train-slices 0-139)"},
             "install": "python benchmarks/ship_travel.py " + " ".join(argv if argv is not None else sys.argv[1:]),
             "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    from napari_cellgen.models.store import atomic_write_bytes

    args.dest.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.dest / "model.safetensors", (src / "model.safetensors").read_bytes())
    atomic_write_bytes(args.dest / "card.json", (json.dumps(card, indent=2, default=str) + "\n").encode())
    atomic_write_bytes(REPO / notes_rel, (json.dumps(notes, indent=2, default=str) + "\n").encode())
    print(f"installed {SHIPPED} v{args.version} ({card['weights_sha256'][:12]}) from {src}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
