"""New mask layouts: fitted object statistics -> freshly drawn mitochondria masks.

:func:`fit_layout` measures the real masks of the allowed slices (object density and its
overdispersion over 256x256 windows; joint distribution of major/minor axis length and
orientation; solidity) and stores them as a small JSON-able dict (``layout.json`` in a
generator folder). :func:`sample_layouts` draws new masks from it: a Gamma-Poisson number of
objects on a padded canvas, each a smooth random blob (an ellipse whose radius is perturbed by
low-order Fourier modes) with size/orientation from a kernel density over the real objects,
placed without touching each other, then cropped. Nothing is copied from the real masks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

LAYOUT_VERSION = 1


def _objects(mask2d: np.ndarray):
    from skimage.measure import label, regionprops

    lab = label(np.asarray(mask2d) != 0, connectivity=2)
    return lab, regionprops(lab)


def _blob(a: float, b: float, theta: float, coeffs: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """Boolean blob with semi-axes a >= b, orientation theta (skimage convention), perturbed radius."""
    r = int(math.ceil(a * (1 + np.abs(coeffs).sum()))) + 2
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float32)
    # skimage orientation: angle between the row axis and the major axis
    c, s = math.cos(theta), math.sin(theta)
    u = yy * c + xx * s  # along the major axis
    v = -yy * s + xx * c
    phi = np.arctan2(v / max(b, 1e-3), u / max(a, 1e-3))
    rad = np.ones_like(phi)
    for k, (ck, pk) in enumerate(zip(coeffs, phases, strict=True), start=2):
        rad += ck * np.cos(k * phi + pk)
    return (u / a) ** 2 + (v / max(b, 0.5)) ** 2 <= np.clip(rad, 0.3, None) ** 2


def _draw_shape(rng: np.random.Generator, table: np.ndarray, bw: np.ndarray, wobble: float):
    row = table[rng.integers(len(table))]
    lmaj, lmin, ori = row + rng.normal(0, 1, 3) * bw
    a, b = math.exp(lmaj) / 2, math.exp(lmin) / 2
    if b > a:
        a, b = b, a
    a, b = max(a, 2.0), max(b, 1.5)
    coeffs = rng.normal(0, 1, 3) * wobble / np.arange(1, 4)
    phases = rng.uniform(0, 2 * np.pi, 3)
    return _blob(a, b, float(ori), coeffs, phases)


def _solidity(blob: np.ndarray) -> float:
    from skimage.measure import regionprops

    props = regionprops(blob.astype(np.uint8))
    return float(props[0].solidity) if props else 1.0


def fit_layout(
    masks: np.ndarray,
    slices: Sequence[int] | None = None,
    tile: int = 256,
    windows_per_slice: int = 64,
    seed: int = 0,
) -> dict:
    """Object statistics of the masks of ``slices`` (None = every slice with any foreground).

    ``masks``: (Z, H, W) or (H, W) labels/mask array (non-zero = mitochondrion).
    """
    masks = np.asarray(masks)
    if masks.ndim == 2:
        masks = masks[None]
    if slices is None:
        slices = [z for z in range(masks.shape[0]) if np.any(masks[z])]
    rng = np.random.default_rng(seed)
    rows, solid, areas, counts, fgfrac, total_px, n_obj = [], [], [], [], [], 0, 0
    for z in slices:
        m = masks[z] != 0
        h, w = m.shape
        lab, props = _objects(m)
        cents = np.array([p.centroid for p in props]) if props else np.zeros((0, 2))
        total_px += h * w
        n_obj += len(props)
        for p in props:
            y0, x0, y1, x1 = p.bbox
            if y0 == 0 or x0 == 0 or y1 == h or x1 == w or p.area < 16:
                continue  # cut by the image border: its size is not its own
            rows.append(
                [
                    math.log(max(p.axis_major_length, 2.0)),
                    math.log(max(p.axis_minor_length, 2.0)),
                    float(p.orientation),
                ]
            )
            solid.append(float(p.solidity))
            areas.append(int(p.area))
        if h >= tile and w >= tile:
            for _ in range(windows_per_slice):
                y, x = rng.integers(0, h - tile + 1), rng.integers(0, w - tile + 1)
                inside = (
                    ((cents[:, 0] >= y) & (cents[:, 0] < y + tile) & (cents[:, 1] >= x) & (cents[:, 1] < x + tile))
                    if len(cents)
                    else np.zeros(0, bool)
                )
                counts.append(int(inside.sum()))
                fgfrac.append(float(m[y : y + tile, x : x + tile].mean()))
    layout: dict = {
        "version": LAYOUT_VERSION,
        "tile": tile,
        "slices": [int(z) for z in slices],
        "n_objects": int(len(rows)),
        "objects": [[round(v, 4) for v in r] for r in rows],  # log major, log minor, orientation
        "density_per_px": (n_obj / total_px) if total_px else 0.0,
        "count_mean": float(np.mean(counts)) if counts else 0.0,
        "count_var": float(np.var(counts)) if counts else 0.0,
        "fg_fraction_mean": float(np.mean(fgfrac)) if fgfrac else 0.0,
        "fg_fraction_std": float(np.std(fgfrac)) if fgfrac else 0.0,
        "area_median": float(np.median(areas)) if areas else 0.0,
        "solidity_mean": float(np.mean(solid)) if solid else 1.0,
        "gap": 4,
    }
    if len(rows) >= 2:
        t = np.asarray(rows)
        # Scott's rule bandwidth for the kernel density over (log major, log minor, orientation)
        bw = t.std(0) * len(t) ** (-1 / 7)
        layout["bandwidth"] = [round(float(v), 4) for v in bw]
        layout["wobble"] = _calibrate_wobble(t, bw, layout["solidity_mean"], rng)
    else:
        layout["bandwidth"] = [0.1, 0.1, 0.3]
        layout["wobble"] = 0.1
    return layout


def _calibrate_wobble(table, bw, target, rng, n: int = 60) -> float:
    """The shape-noise amplitude whose blobs have the real objects' mean solidity."""
    best, err = 0.1, float("inf")
    for wob in (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4):
        s = np.mean([_solidity(_draw_shape(rng, table, bw, wob)) for _ in range(n)])
        if abs(s - target) < err:
            best, err = wob, abs(s - target)
    return float(best)


def has_objects(layout: dict | None) -> bool:
    return bool(layout) and len(layout.get("objects", [])) > 0 and layout.get("density_per_px", 0) > 0


def sample_layouts(
    layout: dict, n: int, shape: tuple[int, int] = (256, 256), seed: int | None = 0, max_tries: int = 30
) -> np.ndarray:
    """``n`` new instance-label masks (N, H, W) uint16 drawn from a fitted ``layout``."""
    if not has_objects(layout):
        raise ValueError("this layout has no object statistics (it was fitted on no annotated objects)")
    rng = np.random.default_rng(seed)
    table = np.asarray(layout["objects"], np.float64)
    bw = np.asarray(layout["bandwidth"], np.float64)
    wobble = float(layout.get("wobble", 0.1))
    gap = int(layout.get("gap", 4))
    h, w = shape
    pad = int(min(256, math.exp(table[:, 0].max()) / 2 + gap))
    ch, cw = h + 2 * pad, w + 2 * pad
    tile_area = float(layout.get("tile", 256)) ** 2
    mean = float(layout["count_mean"]) or layout["density_per_px"] * tile_area
    var = float(layout["count_var"])
    ratio = ch * cw / tile_area
    out = np.zeros((n, h, w), np.uint16)
    for i in range(n):
        lam = mean * ratio
        if var > mean > 0:  # overdispersed: Gamma-distributed rate (negative binomial counts)
            k = mean**2 / (var - mean)
            lam = rng.gamma(k, lam / k)
        count = int(rng.poisson(lam))
        canvas = np.zeros((ch, cw), np.uint16)
        occupied = np.zeros((ch, cw), bool)
        placed, tries = 0, 0
        while placed < count and tries < max_tries * max(count, 1):
            tries += 1
            blob = _draw_shape(rng, table, bw, wobble)
            # centre uniform over the canvas (a blob may hang over its edge, as real ones do)
            y = int(rng.integers(0, ch)) - blob.shape[0] // 2
            x = int(rng.integers(0, cw)) - blob.shape[1] // 2
            grown = _dilate(blob, gap)
            region = _clip(y - gap, x - gap, grown.shape, (ch, cw))
            if region is None:
                continue
            (cy0, cy1, cx0, cx1), (gy0, gy1, gx0, gx1) = region
            g = grown[gy0:gy1, gx0:gx1]
            b = np.pad(blob, gap)[gy0:gy1, gx0:gx1]
            if not b.any() or occupied[cy0:cy1, cx0:cx1][b].any():
                continue
            placed += 1
            canvas[cy0:cy1, cx0:cx1][b] = placed
            occupied[cy0:cy1, cx0:cx1] |= g
        crop = canvas[pad : pad + h, pad : pad + w]
        ids = np.unique(crop[crop > 0])
        lut = np.zeros(int(canvas.max()) + 1, np.uint16)
        lut[ids] = np.arange(1, len(ids) + 1, dtype=np.uint16)
        out[i] = lut[crop]
    return out


def _clip(y: int, x: int, shape: tuple[int, int], canvas: tuple[int, int]):
    """Canvas and patch slices where a patch of ``shape`` at (y, x) overlaps the canvas."""
    cy0, cx0 = max(0, y), max(0, x)
    cy1, cx1 = min(canvas[0], y + shape[0]), min(canvas[1], x + shape[1])
    if cy1 <= cy0 or cx1 <= cx0:
        return None
    return (cy0, cy1, cx0, cx1), (cy0 - y, cy1 - y, cx0 - x, cx1 - x)


def _dilate(blob: np.ndarray, r: int) -> np.ndarray:
    from scipy.ndimage import binary_dilation

    padded = np.pad(blob, r)
    return binary_dilation(padded, iterations=r) if r > 0 else padded


def object_stats(masks: np.ndarray) -> dict:
    """Summary statistics of a stack of masks (for benchmarks): count/area/eccentricity/solidity."""
    masks = np.asarray(masks)
    if masks.ndim == 2:
        masks = masks[None]
    counts, areas, ecc, sol, fg = [], [], [], [], []
    for m in masks:
        _, props = _objects(m)
        counts.append(len(props))
        fg.append(float((m != 0).mean()))
        for p in props:
            areas.append(p.area)
            ecc.append(p.eccentricity)
            sol.append(p.solidity)

    def ms(v):
        return {"mean": float(np.mean(v)) if len(v) else 0.0, "std": float(np.std(v)) if len(v) else 0.0}

    return {
        "count": ms(counts),
        "area": ms(areas),
        "eccentricity": ms(ecc),
        "solidity": ms(sol),
        "fg_fraction": ms(fg),
        "n_masks": int(len(masks)),
    }
