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
The labels stay 3D either way: objects are still followed from section to section.
"""

from __future__ import annotations

import math

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


def adapt(card: dict, pixel_size=None, *, ndim: int = 3, z_context: str = "auto") -> tuple[dict, bool, list[str]]:
    """``(card, own_context, messages)`` for running the model on an image of ``pixel_size`` nm.

    The returned card is a copy with ``scale`` adjusted (unchanged when either pixel size is
    unknown); ``own_context`` is True when each slice should be its own context. ``messages``
    say what was changed, for the status line and the CLI.
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
    own = False
    if ndim == 3 and int(card.get("context", 0)) > 0:
        if z_context == "self":
            own = True
        elif z_context == "auto" and trained_z and z and z / trained_z >= ANISOTROPY_SWITCH:
            own = True
            msgs.append(f"sections {z:g} nm apart, the model's {trained_z:g} nm: each slice is its own "
                        "context (objects are still joined across slices)")
    return card, own, msgs
