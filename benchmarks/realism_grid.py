"""A figure for the README: real EM tiles next to the images the generator makes from their masks.

    python benchmarks/realism_grid.py [--generator mito-gen] [--cols 6] [--seed 0] [--out PNG]

Three rows, one column per tile: the real 256x256 tile (from the slices the generator never trained
on, as in ``benchmarks/realism.py``: its card's validation slices, here 140-164 of Lucchi), the
image generated from that tile's mitochondria mask, and the mask. Tiles and sampling are those of
``realism.py``: real tiles as they are in the file (``--real raw``; before 2026-12-04 each slice was
stretched 1-99 % to 0-255, the generator's old output scale), places drawn
by :func:`realism.positions` with ``--seed``, the first ``--cols`` places whose mask covers
``--min-fg``..``--max-fg`` of the tile (in distinct slices, each square sharing at most a quarter
with another: neighbouring slices are nearly the same picture); ``generate.sample`` with 25
DPM-Solver++ steps, guidance 2 and the VAE card's pixel noise, seeded. Every tile is drawn in
grey with vmin 0, vmax 255 (no per-tile rescaling), so differences in grey range show. Writes
the PNG (default docs/screenshots/realism_grid.png) and benchmarks/results/realism_grid.json (tile
places, the generator's weights' sha256, seed, command, date).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
import tifffile

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _provenance import generator_ref, stamp, write_json  # noqa: E402
from realism import DATA, TILE, held_out_slices, positions, real_tiles  # noqa: E402

ROWS = ("real (slices {lo}\u2013{hi})", "generated from its mask", "mask")


def pick_tiles(masks, zs, n, seed, min_fg, max_fg, candidates=2000):
    """The first ``n`` of ``candidates`` seeded random places whose mask covers min_fg..max_fg of the tile.

    Neighbouring slices are nearly the same image, so a place is skipped if its square shares more than
    a quarter (in y, x, whatever the slice) with one already chosen; slices are kept distinct while enough qualify.
    Deterministic for a seed.
    """
    pos = positions(zs, candidates, masks.shape[1:], seed)
    ok = [(p, float((masks[p[0], p[1] : p[1] + TILE, p[2] : p[2] + TILE] != 0).mean())) for p in pos]
    ok = [(p, f) for p, f in ok if min_fg <= f <= max_fg]

    def apart(p, chosen):  # shares at most a quarter of its square with any chosen one
        return all(max(0, TILE - abs(p[1] - q[1])) * max(0, TILE - abs(p[2] - q[2])) <= 0.25 * TILE**2
                   for q, _ in chosen)

    for distinct_slices in (True, False):
        chosen = []
        for p, f in ok:
            if apart(p, chosen) and not (distinct_slices and any(p[0] == q[0] for q, _ in chosen)):
                chosen.append((p, f))
            if len(chosen) == n:
                return chosen
    raise SystemExit(f"only {len(chosen)} places apart of {candidates} have "
                     f"{min_fg:.0%}-{max_fg:.0%} mitochondria")


def draw(real, gen_imgs, masks, row_labels, footer, out: Path, width_px: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(real)
    dpi = 100
    left, gap, bottom = 0.22, 0.03, 0.22  # in tile units
    w_units = left + n + (n - 1) * gap + 0.02
    h_units = 3 + 2 * gap + bottom + 0.02
    fig_w = width_px / dpi
    unit = fig_w / w_units
    fig = plt.figure(figsize=(fig_w, h_units * unit), dpi=dpi)
    for r, (label, tiles) in enumerate(zip(row_labels, (real, gen_imgs, masks), strict=True)):
        for c in range(n):
            x0 = (left + c * (1 + gap)) / w_units
            y0 = (bottom + (2 - r) * (1 + gap)) / h_units
            ax = fig.add_axes((x0, y0, 1 / w_units, 1 / h_units))
            ax.imshow(tiles[c], cmap="gray", vmin=0, vmax=255, interpolation="antialiased")
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if c == 0:
                ax.set_ylabel(label, fontsize=11)
    fig.text(left / w_units, 0.35 * bottom / h_units, footer, fontsize=8.5, color="0.3", va="center")
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    plt.close(fig)
    from PIL import Image  # all grey: an 8-bit grey PNG is a quarter of matplotlib's RGBA one

    Image.open(buf).convert("L").save(out, optimize=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default=None, help="generator folder or name (default: the shipped one)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--slices", default=None, help="held-out slices, e.g. 140-164 (default: from the card)")
    ap.add_argument("--cols", type=int, default=6, help="tiles (columns; default 6)")
    ap.add_argument("--min-fg", type=float, default=0.05, help="least mitochondria fraction of a tile")
    ap.add_argument("--max-fg", type=float, default=0.40, help="most mitochondria fraction of a tile")
    ap.add_argument("--steps", type=int, default=25, help="denoising steps (default 25)")
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0, help="seed of the places and of sampling")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--width", type=int, default=1400, help="figure width in pixels")
    ap.add_argument("--out", type=Path, default=HERE.parent / "docs" / "screenshots" / "realism_grid.png")
    ap.add_argument("--json", type=Path, default=HERE / "results" / "realism_grid.json")
    args = ap.parse_args(argv)

    import torch

    from napari_cellgen.generate.sample import sample_sync
    from napari_cellgen.generate.store import load_generator
    from napari_cellgen.train.data import parse_slices

    torch.set_num_threads(args.threads)
    gen = load_generator(args.generator)
    ref = generator_ref(args.generator)
    images = tifffile.imread(args.data / "training.tif")
    labels = tifffile.imread(args.data / "training_groundtruth.tif")
    held = parse_slices(args.slices, images.shape[0]) if args.slices else held_out_slices(gen, images.shape[0])
    picked = pick_tiles(labels, held, args.cols, args.seed, args.min_fg, args.max_fg)
    pos = [p for p, _ in picked]
    real = real_tiles(images, pos)
    fg = np.stack([labels[z, y : y + TILE, x : x + TILE] != 0 for z, y, x in pos])

    t0 = time.perf_counter()
    out = sample_sync(gen, fg, steps=args.steps, guidance=args.guidance, seed=args.seed,
                      allow_empty=True, batch_size=len(fg))
    sample_s = time.perf_counter() - t0
    generated = out.images
    print(f"sampled {len(fg)} tiles in {sample_s:.1f} s", file=sys.stderr)

    rows = (ROWS[0].format(lo=min(held), hi=max(held)), *ROWS[1:])
    footer = (f"{ref['label']}: {args.steps} DPM-Solver++ steps, guidance {args.guidance:g}, VAE pixel noise, "
              f"seed {args.seed}. 256\u00b2 tiles, real tiles as in the file; "
              "all shown with grey 0\u2013255, no per-tile rescaling.")
    draw(real, generated, fg.astype(np.uint8) * 255, rows, footer, args.out, args.width)

    def grey(t):
        return {"mean": round(float(t.mean()), 1), "std": round(float(t.std()), 1),
                "p1": int(np.percentile(t, 1)), "p99": int(np.percentile(t, 99))}

    res = {
        "generator": ref,
        **stamp(argv),
        "figure": str(args.out),
        "data": str(args.data),
        "held_out_slices": held,
        "tile": TILE,
        "tiles": [{"z": z, "y": y, "x": x, "mito_fraction": round(f, 3),
                   "grey_real": grey(r), "grey_generated": grey(g)}
                  for ((z, y, x), f), r, g in zip(picked, real, generated, strict=True)],
        "selection": f"first {args.cols} of realism.positions(held, 2000, seed={args.seed}) with a mask fraction "
                     f"in [{args.min_fg}, {args.max_fg}], squares sharing <= 25 % in y, x, one per slice",
        "sampling": {"steps": args.steps, "guidance": args.guidance, "sampler": "dpm++",
                     "pixel_noise": "the VAE card's noise_std", "seed": args.seed, "batch": len(fg),
                     "seconds": round(sample_s, 1), "threads": args.threads},
        "display": "grey colormap, vmin 0, vmax 255, no per-tile rescaling",
    }
    write_json(args.json, res)
    print(f"wrote {args.out} and {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
