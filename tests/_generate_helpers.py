"""Tiny data and a tiny trained generator shared by the tests/test_generate_*.py files."""

from __future__ import annotations

import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np


def disks(z: int = 5, size: int = 64, seed: int = 0, radius=(5, 9), per_slice: int = 2):
    """(images uint8, masks uint8) with bright disks where the mask is 1."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((z, size, size), np.uint8)
    images = rng.normal(100, 10, (z, size, size))
    for k in range(z):
        for _ in range(per_slice):
            cy, cx = rng.integers(12, size - 12, 2)
            r = int(rng.integers(*radius))
            d = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            masks[k][d] = 1
            images[k][d] += 80
    return images.clip(0, 255).astype(np.uint8), masks


def tiny_config(**kw):
    from napari_cellgen.generate.train import GeneratorConfig

    base = dict(
        vae_steps=3,
        vae_batch=2,
        vae_patch=32,
        vae_channels=(8, 16, 32),
        diffusion_steps=3,
        diffusion_batch=2,
        latent_crop=4,
        block_out_channels=(32, 32),
        attention_levels=(1,),
        tile=32,
        val_every=2,
        warmup=2,
        latent_variants=1,
    )
    base.update(kw)
    return GeneratorConfig(**base)


@lru_cache(maxsize=1)
def _tiny_generator_dir() -> Path:
    from napari_cellgen._progress import run
    from napari_cellgen.generate.train import train_generator

    images, masks = disks()
    out = Path(tempfile.mkdtemp(prefix="cellgen-tiny-gen-")) / "gen"
    run(train_generator(images, masks, out, tiny_config(), val_slices=[4]))
    return out


def tiny_generator(dest: Path) -> Path:
    """A copy of the session's tiny trained generator (32x32 tiles, divisor 16) in ``dest``."""
    shutil.copytree(_tiny_generator_dir(), dest)
    return dest
