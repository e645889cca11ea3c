"""Bookkeeping for a generator trained on a packed subset of Lucchi (``benchmarks/device_generator.sh``).

The lent GPU trained on pages of a subset file (``device_data.py pack-subset``), so its cards name
pages, not Lucchi slices, and it was trained before generators recorded ``grey_range`` (the grey
levels [-1, 1] stands for). This copies the generator and, in the copy's cards only (weights and
their sha256 untouched):

- replaces the page numbers of ``image_slices``, ``mask_slices``, ``val_slices`` and the layout's
  ``slices`` by the Lucchi slices they were (``--subset`` meta.json), keeping the pages as ``*_pages``;
- adds ``grey_range``, computed as training computes it now (``training_grey_range`` of the Lucchi
  images of its training slices).

    python benchmarks/gpu_generator_cards.py runs/gpu_gen/A/gen runs/gpu_gen/A2 --subset .gendata
    python benchmarks/gpu_generator_cards.py src/napari_cellgen/_data/generators/mito-gen runs/mito-gen-grey
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import tifffile

from napari_cellgen.generate.train import slice_grey_levels, training_grey_range
from napari_cellgen.models.store import atomic_write_bytes

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "lucchi"


def _write(path: Path, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, default=str).encode())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--subset", type=Path, default=None, help="the pack-subset folder (its meta.json) the run read")
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args(argv)
    if args.dest.exists():
        raise SystemExit(f"{args.dest} exists: choose a new folder")
    shutil.copytree(args.src, args.dest)
    vpath, dpath, lpath = (args.dest / "vae" / "card.json", args.dest / "denoiser" / "card.json",
                           args.dest / "layout.json")
    vcard, dcard, layout = (json.loads(p.read_text()) for p in (vpath, dpath, lpath))
    tr = dcard["training"]
    if args.subset is not None:
        pages = json.loads((args.subset / "meta.json").read_text())["slices"]
        for key in ("image_slices", "mask_slices", "val_slices"):
            tr[key + "_pages"] = tr[key]
            tr[key] = [pages[z] for z in tr[key]]
        layout["slices_pages"] = layout.get("slices", [])
        layout["slices"] = [pages[z] for z in layout["slices_pages"]]
        tr["slices_note"] = f"Lucchi slice numbers; the run read pages of {args.subset} ({'*_pages'})"
    images = tifffile.imread(args.data / "training.tif")
    vcard["grey_range"] = training_grey_range(slice_grey_levels(images[z]) for z in tr["image_slices"])
    vcard["grey_range_note"] = (f"median 1st/99th percentile of Lucchi image slices {tr['image_slices'][0]}-"
                                f"{tr['image_slices'][-1]} (its training slices), added by gpu_generator_cards.py")
    _write(vpath, vcard)
    _write(dpath, dcard)
    _write(lpath, layout)
    print(args.dest, "grey_range", vcard["grey_range"])


if __name__ == "__main__":
    main()
