"""Synthetic training sets: N generated (image, mask) pairs in a folder.

::

    DIR/images.tif   (N, 256, 256) uint8 generated EM
    DIR/masks.tif    (N, 256, 256) uint16 instance labels (0 = background), pixel-aligned
    DIR/synth.json   generator, seed, steps, guidance, count, date

:func:`read_synthetic_set` gives them back checked (same count and shape) for ``cellgen train
--synthetic DIR`` and the Train dock's training pool.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Generator
from pathlib import Path

import numpy as np

from .._progress import Progress

IMAGES, MASKS, META = "images.tif", "masks.tif", "synth.json"


class SyntheticSetError(ValueError):
    """A synthetic set folder that is missing or inconsistent."""


def write_synthetic_set(
    out_dir: str | Path,
    n: int,
    generator=None,
    *,
    seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
    batch_size: int = 4,
    pixel_noise: float | None = None,
) -> Generator[Progress, None, dict]:
    """Generate ``n`` new pairs with ``generator`` (name, folder or loaded) and write them to ``out_dir``."""
    from ..io import write_tiff
    from ..models.store import atomic_write_bytes
    from .sample import DEFAULT_GUIDANCE, DEFAULT_STEPS, sample
    from .store import LatentGenerator, load_generator

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    gen = generator if isinstance(generator, LatentGenerator) else load_generator(generator)
    steps = DEFAULT_STEPS if steps is None else steps
    guidance = DEFAULT_GUIDANCE if guidance is None else guidance
    res = yield from sample(
        gen,
        None,
        n,
        steps=steps,
        guidance=guidance,
        seed=seed,
        pairs=True,
        batch_size=batch_size,
        pixel_noise=pixel_noise,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_tiff(out / IMAGES, res.images)
    write_tiff(out / MASKS, res.masks.astype(np.uint16), labels=True)
    meta = {
        "kind": "napari-cellgen synthetic set",
        "n": int(n),
        "shape": list(res.images.shape[1:]),
        "generator": gen.name,
        "generator_path": str(gen.path) if gen.path else None,
        "seed": int(seed),
        "steps": int(steps),
        "guidance": float(guidance),
        "pixel_noise": ("coloured (the VAE card's noise_psd)" if gen.vae_card.get("noise_psd") else
                        float(gen.vae_card.get("noise_std", 0.0))) if pixel_noise is None else float(pixel_noise),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_bytes(out / META, json.dumps(meta, indent=2).encode())
    return meta


def read_synthetic_set(folder: str | Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(images uint8 (N, H, W), masks (N, H, W) labels, meta)`` of a synthetic set folder."""
    import tifffile

    folder = Path(folder)
    if not folder.is_dir():
        raise SyntheticSetError(f"{folder} is not a folder: write a synthetic set with `cellgen synth -o DIR`")
    missing = [f for f in (IMAGES, MASKS) if not (folder / f).is_file()]
    if missing:
        raise SyntheticSetError(f"{folder} lacks {', '.join(missing)}: it is not a synthetic set")
    images, masks = tifffile.imread(folder / IMAGES), tifffile.imread(folder / MASKS)
    if images.ndim == 2:
        images, masks = images[None], masks[None] if masks.ndim == 2 else masks
    if images.shape != masks.shape:
        raise SyntheticSetError(f"{folder}: images {images.shape} and masks {masks.shape} differ in shape")
    meta = {}
    if (folder / META).is_file():
        meta = json.loads((folder / META).read_text())
        if meta.get("n") not in (None, len(images)):
            raise SyntheticSetError(f"{folder}: synth.json says {meta['n']} pairs but the files hold {len(images)}")
    return images, masks, meta
