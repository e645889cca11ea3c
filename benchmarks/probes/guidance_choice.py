"""Should ``mito-gen`` sample with less classifier-free guidance by default (issue 16)? A rule before numbers.

After ``grey_range`` (generator_choice.py, second pass) the classifier still tells generated tiles from
real ones at 0.921 on slices 115-139, mostly by their grey-level statistics: generated tiles vary less
from tile to tile (tile means 135 +- 4 against 144 +- 14). Guidance 2 pushes every sample towards
what the mask predicts, which can make tiles more alike. Written on 2026-12-04, before any number:

    Choice block 115-139 (mito-gen trained on it, which favours no guidance value over another),
    realism.py --real raw and fidelity (mito-unet on the generated tiles, pooled IoU) as in
    generator_choice.py, for guidance 1.0 and 1.5 (2.0 is the recorded 0.921 / 0.908).
    The default becomes the guidance with the lowest accuracy if that is at least 0.02 below
    guidance 2's and its fidelity is at least 0.85; otherwise it stays 2. Only the default is then
    measured on 140-164.

    python benchmarks/probes/guidance_choice.py            # runs realism.py per guidance (cached)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import tifffile

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from _provenance import generator_ref, model_ref, stamp, write_json  # noqa: E402
from generator_choice import DATA, fidelity  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default="mito-gen")
    ap.add_argument("--guidance", default="1.0,1.5")
    ap.add_argument("--baseline", type=Path, default=Path("runs/choice"),
                    help="folder with realism_shipped2.json and shipped2/ (guidance 2, generator_choice.py)")
    ap.add_argument("--work", type=Path, default=Path("runs/guidance"))
    ap.add_argument("--segmenter", default="mito-unet")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=HERE.parent / "results" / "guidance_choice.json")
    args = ap.parse_args(argv)

    from napari_cellgen.models.store import load_model

    masks = tifffile.imread(args.data / "training_groundtruth.tif")
    seg, card = load_model(args.segmenter)
    rows = {}
    runs = {"2.0": (args.baseline / "realism_shipped2.json", args.baseline / "shipped2")}
    for g in args.guidance.split(","):
        tag = f"g{g}"
        out, cache = args.work / f"realism_{tag}.json", args.work / tag
        if not out.is_file():
            subprocess.run([sys.executable, str(HERE.parent / "realism.py"), "--generator", args.generator,
                            "--slices", "115-139", "--real", "raw", "--guidance", g, "--minutes", "60",
                            "--cache", str(cache), "--out", str(out)], check=True)
        runs[g] = (out, cache)
    for g, (out, cache) in runs.items():
        r = json.loads(out.read_text())
        if r["held_out_slices"] != list(range(115, 140)) or r.get("real_tiles") != "raw":
            raise SystemExit(f"{out} was not measured raw on slices 115-139")
        if r["generator"]["denoiser_weights_sha256"] != generator_ref(args.generator)["denoiser_weights_sha256"]:
            raise SystemExit(f"{out} was measured with another generator")
        rows[g] = {"realism_accuracy": r["real_vs_generated"]["accuracy"], "ci95": r["real_vs_generated"]["ci95"],
                   "texture_only": r["real_vs_generated_standardized"]["accuracy"],
                   "tile_mean_grey_std": r["grey_levels"]["generated"]["mean"]["std"],
                   "real_tile_mean_grey_std": r["grey_levels"]["real"]["mean"]["std"],
                   "fidelity": fidelity(cache, masks, seg, card), "s_per_tile": r["sampling"]["s_per_tile"]}
        print(g, json.dumps({k: rows[g][k] for k in ("realism_accuracy", "texture_only", "fidelity")}), flush=True)
    best = min(rows, key=lambda g: rows[g]["realism_accuracy"])
    change = (best != "2.0" and rows[best]["realism_accuracy"] <= rows["2.0"]["realism_accuracy"] - 0.02
              and rows[best]["fidelity"]["pooled"] >= 0.85)
    res = {"rule": __doc__.split("before any number:")[1].split("python benchmarks")[0].strip(),
           "generator": generator_ref(args.generator), "segmenter": model_ref(args.segmenter), "rows": rows,
           "lowest": best, "default_guidance": float(best) if change else 2.0, **stamp(argv)}
    write_json(args.out, res)
    print(json.dumps({"lowest": best, "default_guidance": res["default_guidance"]}))


if __name__ == "__main__":
    main()
