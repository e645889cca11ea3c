"""``cellgen demo``: napari with the sample EM crop and the plugin's widgets docked.

Where there is no display (or with ``--headless``) it writes its results instead: the
sample stack and ground truth, the shipped model's segmentation, a PNG preview and a
JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

PLUGIN = "napari-cellgen"
SAMPLE_KEY = "em_mito"
DOCKED = ("EM stack", "Segment")  # widget display names in napari.yaml


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "demo",
        help="open napari with the sample EM crop (or, headless, segment it and write the results)",
        description="Open napari with the sample EM crop and the EM stack and Segment widgets. "
        "With --headless, or when there is no display, segment the sample with the shipped model "
        "and write the results to --out instead.",
    )
    p.add_argument("--headless", action="store_true", help="do not open a window; write results to --out")
    p.add_argument("--out", default="cellgen-demo", help="folder for headless results (default: %(default)s)")
    p.add_argument("--model", default=None, help="model name or folder (default: the shipped one)")
    return p


def has_display() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


OUTPUTS = ("sample_em.tif", "sample_mito_truth.tif", "mito_labels.tif", "preview.png", "summary.json")


def run(args) -> int:
    if args.headless or not has_display():
        from .._paths import check_outputs
        from ..models.store import looks_like_path, read_card, resolve

        model_path = args.model if args.model and looks_like_path(args.model) else None
        check_outputs([("--model", model_path)], [("--out", args.out, "dir", OUTPUTS)])
        if args.model:
            read_card(resolve(args.model))  # a named model that is missing or damaged: say so now
        if not args.headless:
            print("cellgen demo: no display found, running headless (see --help)", file=sys.stderr)
        return run_headless(Path(args.out), model=args.model)
    return run_viewer()


def open_demo_viewer(show: bool = True):
    """A napari viewer with the sample data and the EM stack and Segment widgets docked."""
    import napari

    viewer = napari.Viewer(title="napari-cellgen demo", show=show)
    viewer.open_sample(PLUGIN, SAMPLE_KEY)
    for name in DOCKED:
        try:
            viewer.window.add_plugin_dock_widget(PLUGIN, name)
        except Exception as exc:  # a widget still being written must not stop the demo
            print(f"cellgen demo: could not dock the {name!r} widget: {exc}", file=sys.stderr)
    return viewer


def run_viewer() -> int:
    import napari

    open_demo_viewer(show=True)
    napari.run()
    return 0


def overlay(image: np.ndarray, masks: list[tuple[np.ndarray, tuple[int, int, int]]]) -> np.ndarray:
    """A gray uint8 RGB picture of a 2D ``image`` with the outlines of each boolean mask in a colour."""
    from scipy import ndimage as ndi

    img = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(img, [0.5, 99.5])
    gray = np.clip((img - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    for mask, color in masks:
        mask = np.asarray(mask, bool)
        rgb[mask & ~ndi.binary_erosion(mask, iterations=2)] = color
    return rgb


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    denom = a.sum() + b.sum()
    return float(2 * (a & b).sum() / denom) if denom else 1.0


def _segment(image, pixel_size, model):
    """Labels from the shipped (or given) model, or ``(None, reason)`` when there is none yet."""
    try:
        from ..segment.pipeline import SegmentOptions, segment
    except ImportError as exc:  # pragma: no cover - the segmentation package is part of the plugin
        return None, f"segmentation is not available ({exc})"
    from ..models.store import ModelError

    try:
        res = segment(image, SegmentOptions(model=model, device="auto", measure=False), pixel_size=pixel_size)
    except ModelError as exc:
        return None, f"no model to segment with ({exc})"
    return res, ""


def run_headless(out: Path, model: str | None = None) -> int:
    """Segment the sample and write stack, ground truth, labels, a PNG preview and a summary."""
    import imageio.v3 as iio

    from .._paths import atomic_write_bytes
    from .._sample_data import sample_paths
    from ..io import read_stack, write_tiff

    out.mkdir(parents=True, exist_ok=True)
    image_path, gt_path = sample_paths()
    image, meta = read_stack(image_path)
    truth, _ = read_stack(gt_path)
    px = meta["pixel_size_nm"]
    written = [
        write_tiff(out / "sample_em.tif", image, px),
        write_tiff(out / "sample_mito_truth.tif", truth, px, labels=True),
    ]
    summary: dict = {"sample": str(image_path), "shape": list(image.shape), "pixel_size_nm": px}
    t0 = time.perf_counter()
    res, why = _segment(image, px, model)
    masks = [(truth > 0, (0, 220, 0))]
    if res is not None:
        labels = np.asarray(res.labels)
        written.append(write_tiff(out / "mito_labels.tif", labels, px, labels=True))
        summary.update(
            model=res.card.get("name"),
            objects=int(res.n_objects),
            dice_vs_truth=round(dice(labels > 0, truth > 0), 4),
            seconds=round(time.perf_counter() - t0, 1),
        )
        masks.append((labels > 0, (255, 0, 255)))
    else:
        summary["segmentation"] = f"skipped: {why}"
        print(f"cellgen demo: {why}; wrote the sample only", file=sys.stderr)
    z = image.shape[0] // 2
    preview = out / "preview.png"
    # every file is written atomically: an interrupted demo never leaves a half-written one
    atomic_write_bytes(preview, iio.imwrite("<bytes>", overlay(image[z], [(m[z], c) for m, c in masks]),
                                            extension=".png"))
    written.append(preview)
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
    written.append(out / "summary.json")
    for path in written:
        print(path)
    if res is not None:
        print(
            f"{summary['objects']} mitochondria, Dice {summary['dice_vs_truth']} against the ground truth "
            f"(preview: green = truth, magenta = model) in {summary['seconds']} s",
            file=sys.stderr,
        )
    return 0
