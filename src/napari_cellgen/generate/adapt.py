"""Adapting a generator to the user's microscope without retraining it (``adapt="acquisition"``).

Fine-tuning the VAE and the denoiser on a new volume for minutes on a CPU loses the mask
conditioning: on a domain-shifted Lucchi block the adapted generator's objects were read back as
their masks at 0.39 IoU, and its pairs cost 0.11 IoU in a few-label fine-tune. This job keeps the
starting generator's networks as they are and learns what differs between microscopes
(:mod:`.acquire`): the pixel size, the blur, the grey-level response and the noise, from the user's
images alone, plus the mask-layout statistics from the labelled slices. The result is a generator
folder (the parent's ``vae/`` and ``denoiser/`` copied, a new ``layout.json`` and
``acquisition.json``) that :func:`.sample.sample` renders through that acquisition model.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from collections.abc import Generator, Sequence
from pathlib import Path

import numpy as np

from .._progress import Progress

FIT_SAMPLES = 24  # generated tiles the acquisition model is fitted on
FIT_SLICES = 32  # at most this many of the user's slices are read for the fit


def scale_for(gen, pixel_size_nm: float | None) -> tuple[float, str]:
    """Generator pixel size / user pixel size, and where the user's pixel size came from."""
    gen_nm = gen.vae_card.get("pixel_size_nm")
    if pixel_size_nm is None or not gen_nm:
        why = "the images give no pixel size" if pixel_size_nm is None else "the generator records none"
        return 1.0, f"assumed equal to the generator's ({why}; give --pixel-size to resample)"
    return float(gen_nm) / float(pixel_size_nm), f"{float(pixel_size_nm):g} nm given; generator {float(gen_nm):g} nm"


def adapt_acquisition(
    images,
    masks,
    out_dir: str | Path,
    init,
    *,
    slices: Sequence[int] | None = None,
    pixel_size_nm: float | None = None,
    seed: int = 0,
    minutes: float | None = None,
    name: str | None = None,
) -> Generator[Progress, None, dict]:
    """Fit ``init``'s acquisition model on ``images`` and its layout on the masks of ``slices``.

    Only ``masks[z]`` for ``z`` in ``slices`` is read (None: every slice with any annotation; ``[]``:
    none, the parent's layout is kept). ``minutes`` caps the time spent sampling the tiles the fit
    compares against (at least 4 are sampled). Yields Progress stages "prepare", "sample", "fit".
    """
    from ..models.store import CARD, atomic_write_bytes
    from .acquire import CROP, fit_acquisition, upsample_labels
    from .config import GeneratorDataError
    from .layout import fit_layout
    from .sample import sample
    from .store import ACQUISITION, LAYOUT, PARTS, load_generator

    t0 = time.perf_counter()
    gen = load_generator(init)
    yield Progress(0, 1, "prepare")
    n = 1 if images.ndim == 2 else images.shape[0]
    stack = images[None] if images.ndim == 2 else images
    scale, why = scale_for(gen, pixel_size_nm)
    if masks is None:
        if slices:
            raise GeneratorDataError("slices were given but no masks")
        allowed = []
    elif slices is None:
        allowed = [z for z in range(n) if np.any(np.asarray(masks[z] if masks.ndim == 3 else masks))]
    else:
        allowed = sorted({int(z) for z in slices})
        bad = [z for z in allowed if z < 0 or z >= n]
        if bad:
            raise GeneratorDataError(f"slices {bad} are outside the stack (it has {n} slices, 0-{n - 1})")
    layout = gen.layout
    if allowed:
        mstack = masks[None] if masks.ndim == 2 else masks
        up = [upsample_labels(np.asarray(mstack[z]), (round(mstack.shape[1] / scale), round(mstack.shape[2] / scale)))
              for z in allowed]
        layout = fit_layout(np.stack(up), tile=gen.tile, seed=seed)
        layout["slices"] = allowed
        layout["fitted_at"] = "the generator's pixel size (masks resampled by 1/scale)"
    pick = np.unique(np.linspace(0, n - 1, min(n, FIT_SLICES)).round().astype(int))
    user = np.stack([np.asarray(stack[z]) for z in pick])
    if user.dtype != np.uint8:  # generated tiles are uint8: map the user's range (0.5-99.5 %) onto it
        lo, hi = np.percentile(user, (0.5, 99.5))
        user = np.clip(np.round((user.astype(np.float64) - lo) / max(hi - lo, 1e-9) * 255), 0, 255).astype(np.uint8)
    yield Progress(1, 1, "prepare")

    gen.layout = layout
    pairs = bool(layout.get("objects"))
    side = gen.tile  # tiles large enough that, resampled to the user's pixels, the fit's crops fit twice
    while side * scale < 2 * CROP:
        side += gen.divisor
    budget_s = 60.0 * minutes if minutes else None
    tiles, batches = [], FIT_SAMPLES // 4
    for b in range(batches):
        job = sample(gen, None, 4, seed=seed + 4 * b, pairs=pairs, shape=(side, side), acquisition=False)
        while True:
            try:
                p = next(job)
            except StopIteration as stop:
                tiles.append(stop.value.images)
                break
            yield Progress(b * p.total + p.done, batches * p.total, "sample")
        if budget_s is not None and time.perf_counter() - t0 > 0.8 * budget_s:
            break
    generated = np.concatenate(tiles)
    yield Progress(0, 1, "fit")
    params = fit_acquisition(generated, user, scale=scale, seed=seed)
    params.update({
        "pixel_size_nm": pixel_size_nm, "generator_pixel_size_nm": gen.vae_card.get("pixel_size_nm"),
        "scale_source": why, "fit_on": {"image_slices": pick.tolist(), "generated_tiles": int(len(generated))},
        "parent": str(gen.path), "seconds": round(time.perf_counter() - t0, 1),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    })
    out = Path(out_dir)
    # the microscope and the layouts first: a folder is a generator only once vae/ and denoiser/ exist,
    # so a crash part-way never leaves one that would generate without its acquisition model
    atomic_write_bytes(out / LAYOUT, json.dumps(layout, indent=1).encode())
    atomic_write_bytes(out / ACQUISITION, json.dumps(params, indent=1).encode())
    for part in PARTS:
        for f in (gen.path / part).iterdir():
            if f.is_file() and f.name != CARD:
                atomic_write_bytes(out / part / f.name, f.read_bytes())
    for part, card in (("vae", gen.vae_card), ("denoiser", gen.denoiser_card)):
        card = {k: v for k, v in card.items() if k != "path"}
        if part == "denoiser":
            card["name"] = name or out.name
        card["adapted"] = {"mode": "acquisition", "parent": str(gen.path), "parent_name": gen.name,
                           "note": "weights unchanged; acquisition.json renders the tiles"}
        atomic_write_bytes(out / part / CARD, json.dumps(card, indent=2, default=str).encode())
    yield Progress(1, 1, "fit")
    new = load_generator(out)
    return {"vae": new.vae_card, "denoiser": new.denoiser_card, "layout": new.layout, "path": str(out),
            "acquisition": params}
