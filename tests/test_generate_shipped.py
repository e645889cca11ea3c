"""The bundled generator ("mito-gen") loads offline, is small enough and draws aligned images."""

from __future__ import annotations

import numpy as np

from napari_cellgen.generate.store import DEFAULT_GENERATOR, bundled_generators_dir, is_generator

BUNDLED = bundled_generators_dir() / DEFAULT_GENERATOR


def test_the_generator_is_bundled():
    # part of the package (and of every checkout): a missing one is a broken install, not a skip
    assert is_generator(BUNDLED), f"{BUNDLED} is not a complete generator"


def test_bundled_generator_size_and_cards():
    total = sum(f.stat().st_size for f in BUNDLED.rglob("*") if f.is_file())
    assert total <= 40e6
    from napari_cellgen.generate.store import load_generator

    gen = load_generator(None)
    assert gen.path.resolve() == BUNDLED.resolve()
    assert gen.tile == 256 and gen.divisor == 32
    tr = gen.denoiser_card["training"]
    assert tr["mask_slices"] == list(range(140)) and tr["val_slices"] == list(range(140, 165))
    assert gen.vae_card["noise_std"] > 0


def test_bundled_generator_samples_from_a_drawn_mask(monkeypatch):
    from napari_cellgen.generate.sample import sample_sync

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yy, xx = np.mgrid[:256, :256]
    mask = (((yy - 128) / 40.0) ** 2 + ((xx - 100) / 70.0) ** 2 <= 1).astype(np.uint8)
    res = sample_sync(None, mask, steps=8, seed=0, pixel_noise=0)
    img = res.images[0].astype(float)
    assert res.images.shape == (1, 256, 256)
    # a mitochondrion is darker than the cytoplasm around it in this EM
    ring = (((yy - 128) / 60.0) ** 2 + ((xx - 100) / 90.0) ** 2 <= 1) & (mask == 0)
    assert img[mask == 1].mean() < img[ring].mean() - 10
