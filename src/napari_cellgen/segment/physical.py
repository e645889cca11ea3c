"""Run a model at the pixel size it was trained at, and keep its 2.5D context honest.

A model card records ``pixel_size_nm`` ((z, y, x) of its training data, e.g. Lucchi's 5 nm
voxels) and ``scale`` (the factor its input is resized by, e.g. 0.5: the network sees 10 nm
pixels). When the image's own pixel size is known (from the file, or given by the user),
:func:`adapt` changes the resize factor so that the network again sees the pixels it was
trained on: a 10 nm image with a 5 nm / scale-0.5 model runs at scale 1.0.

The 2.5D context: the model learnt that its neighbour channels are sections ``z`` nm away.
When the image's sections are much thicker (ssTEM: 40-50 nm against 5 nm), neighbours are
other structures; :func:`adapt` then gives the model each slice as its own context
(``z_context="auto"``, the default, switches when the image's z spacing is at least
:data:`ANISOTROPY_SWITCH` times the training one; ``"neighbours"``/``"self"`` force it).
When the file gives no z spacing, :func:`section_spacing` measures it from the image itself:
neighbouring sections are as alike as the same section shifted sideways by the section spacing
(in pixels), so the shift at which a slice's own correlation falls to its neighbour's is the
spacing. On Lucchi (5 nm voxels) it reads 1.05 px as acquired and 1.9, 3.8, 8.6 and 10.8 px for
every 2nd, 4th, 8th and 10th slice, the same with blur and noise added.
The labels stay 3D either way: objects are still followed from section to section.
"""

from __future__ import annotations

import math

import numpy as np

ANISOTROPY_SWITCH = 3.0  # image z spacing / training z spacing from which neighbours stop being context
Z_CONTEXT = ("auto", "neighbours", "self")
MAX_SCALE = 4.0  # the network never sees the image enlarged more than this


def _xyz(pixel_size) -> tuple[float | None, float | None]:
    """(z, xy) in nm from a (y, x) or (z, y, x) pixel size; None where unknown."""
    if not pixel_size:
        return None, None
    vals = [float(v) for v in pixel_size]
    for v in vals:
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"pixel sizes must be positive numbers of nm, got {tuple(pixel_size)}")
    xy = math.sqrt(vals[-1] * vals[-2]) if len(vals) >= 2 else vals[-1]
    z = vals[-3] if len(vals) >= 3 else None
    return z, xy


def given_pixel_size(given, file_pixel_size, ndim: int):
    """The pixel size to use: the user's (one number = every axis; else one per axis), else the file's."""
    if not given:
        return file_pixel_size
    ps = tuple(float(v) for v in given)
    ps = ps * ndim if len(ps) == 1 else ps
    if len(ps) != ndim:
        raise ValueError(f"--pixel-size needs 1 or {ndim} numbers for a {ndim}D image, got {len(ps)}")
    return ps


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / den if den > 0 else None


def section_spacing(image, pairs: int = 8, crop: int = 512, max_shift: int = 48) -> float | None:
    """The distance between neighbouring slices of ``image`` (z, y, x), in its own lateral pixels.

    For each of up to ``pairs`` neighbouring pairs (central ``crop`` square), the lateral shift
    (mean of y and x, interpolated) at which a slice correlates with itself as little as with its
    neighbour; the median over pairs. ``max_shift`` when sections are farther apart than that;
    None when it cannot tell (fewer than 2 slices, flat slices). Reads only those slices, so a
    lazy (dask, zarr) stack is not loaded.
    """
    if getattr(image, "ndim", 0) != 3 or image.shape[0] < 2:
        return None
    n, h, w = image.shape
    c = min(crop, h, w)
    if c < 8:
        return None
    y0, x0 = (h - c) // 2, (w - c) // 2
    found = []
    for z in np.unique(np.linspace(0, n - 2, min(pairs, n - 1)).round().astype(int)):
        a, b = (np.asarray(image[k, y0:y0 + c, x0:x0 + c], dtype=np.float32) for k in (z, z + 1))
        between = _pearson(a, b)
        if between is None:
            continue
        prev, est = 1.0, float(max_shift)
        for s in range(1, min(max_shift, c // 2) + 1):
            ys, xs = _pearson(a[s:], a[:-s]), _pearson(a[:, s:], a[:, :-s])
            if ys is None or xs is None:
                break
            within = 0.5 * (ys + xs)
            if within <= between:
                est = s - 1 + (prev - between) / max(prev - within, 1e-9)
                break
            prev = within
        found.append(est)
    return float(np.median(found)) if found else None


def adapt(card: dict, pixel_size=None, *, ndim: int = 3, z_context: str = "auto",
          image=None) -> tuple[dict, bool, list[str]]:
    """``(card, own_context, messages)`` for running the model on an image of ``pixel_size`` nm.

    The returned card is a copy with ``scale`` adjusted (unchanged when either pixel size is
    unknown); ``own_context`` is True when each slice should be its own context. ``messages``
    say what was changed, for the status line and the CLI. With ``image`` and no z spacing
    known, the spacing is measured from the image (:func:`section_spacing`).
    """
    if z_context not in Z_CONTEXT:
        raise ValueError(f"z context must be one of {', '.join(Z_CONTEXT)}, got {z_context!r}")
    card = dict(card)
    msgs: list[str] = []
    trained_z, trained_xy = _xyz(card.get("pixel_size_nm"))
    z, xy = _xyz(pixel_size)
    if trained_xy and xy and abs(xy / trained_xy - 1) > 0.02:
        scale = float(card.get("scale", 1.0)) * xy / trained_xy
        if scale > MAX_SCALE:
            raise ValueError(
                f"the image's pixels ({xy:g} nm) are {xy / trained_xy:.0f}x larger than the model's "
                f"({trained_xy:g} nm): too coarse to segment; check the pixel size")
        msgs.append(f"pixel size {xy:g} nm, the model's {trained_xy:g} nm: resized by {scale:.3g} "
                    f"(instead of {float(card.get('scale', 1.0)):g})")
        card["scale"] = scale
    elif trained_xy and not xy:  # the commonest silent failure: other pixels read as the model's
        msgs.append(f"no pixel size in the file or given: taken as the model's {trained_xy:g} nm; if yours "
                    "differ, give it (--pixel-size NM; in the dock, Advanced > pixel size)")
    own = False
    if ndim == 3 and int(card.get("context", 0)) > 0:
        if z_context == "self":
            own = True
        elif z_context == "auto" and trained_z and z and z / trained_z >= ANISOTROPY_SWITCH:
            own = True
            msgs.append(f"sections {z:g} nm apart, the model's {trained_z:g} nm: each slice is its own "
                        "context (objects are still joined across slices)")
        elif z_context == "auto" and trained_z and trained_xy and not z and image is not None:
            # no z spacing given: measure it, in the image's pixels (the model's size when unknown)
            px = section_spacing(image)
            if px is not None and px * (xy or trained_xy) / trained_z >= ANISOTROPY_SWITCH:
                own = True
                msgs.append(f"the slices look about {px:.1f} pixels apart (thick sections; measured, the "
                            "file gives no z spacing): each slice is its own context (--z-context "
                            "neighbours or the z spacing in --pixel-size overrides this)")
    return card, own, msgs
