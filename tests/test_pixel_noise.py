"""Coloured pixel noise: the fitted spectrum is the power reconstructions lack, and sampling draws it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from _generate_helpers import tiny_generator
from scipy import ndimage as ndi

from napari_cellgen.generate.pixel_noise import coloured, fit_noise_psd, radial_psd
from napari_cellgen.generate.sample import sample_sync
from napari_cellgen.generate.store import load_generator


def test_white_noise_has_a_flat_spectrum_at_its_variance():
    rng = np.random.default_rng(0)
    p = radial_psd(rng.normal(0, 0.3, (64, 64, 64)))
    assert p[1:] == pytest.approx(np.full(32, 0.09), rel=0.15)


def test_the_fit_recovers_the_missing_power_and_coloured_noise_has_it():
    rng = np.random.default_rng(1)
    rec = ndi.gaussian_filter(rng.normal(0, 1, (48, 64, 64)), (0, 3, 3))  # smooth "reconstructions"
    lost = ndi.gaussian_filter(rng.normal(0, 0.5, rec.shape), (0, 1, 1))  # the detail they lack: 2-8 px
    psd = fit_noise_psd(rec + lost, rec)
    assert psd["size"] == 64 and len(psd["power"]) == 33 and psd["power"][0] == 0.0
    assert np.asarray(psd["power"][1:]) == pytest.approx(radial_psd(lost)[1:], rel=0.25, abs=2e-4)
    drawn = torch.stack([coloured(torch.randn(64, 64, generator=torch.Generator().manual_seed(i)), psd)
                         for i in range(48)])
    got, want = radial_psd(drawn.numpy()), radial_psd(lost)
    assert got[4:] == pytest.approx(want[4:], rel=0.3, abs=2e-4)  # most power sits at 4-16 cycles
    assert drawn.std().item() == pytest.approx(lost.std(), rel=0.15)
    # any image size: frequencies are in cycles per pixel, not per tile
    assert coloured(torch.randn(32, 96), psd).std().item() == pytest.approx(lost.std(), rel=0.3)


def test_sampling_draws_the_cards_coloured_noise(tmp_path):
    base = tiny_generator(tmp_path / "gen")
    card = json.loads((base / "vae" / "card.json").read_text())
    card.pop("noise_psd")  # white noise of noise_std, as cards before noise_psd
    (base / "vae" / "card.json").write_text(json.dumps(card))
    psd_gen = tmp_path / "psd"
    shutil.copytree(base, psd_gen)
    power = np.zeros(17)
    power[4:9] = 0.05  # noise of periods 4-8 px only
    card["noise_psd"] = {"size": 32, "power": power.tolist()}
    (psd_gen / "vae" / "card.json").write_text(json.dumps(card))
    m = np.zeros((4, 32, 32), np.uint8)
    m[:, 8:20, 8:20] = 1
    white = sample_sync(load_generator(base), m, steps=3, seed=2).images
    clean = sample_sync(load_generator(base), m, steps=3, seed=2, pixel_noise=0).images
    col = sample_sync(load_generator(psd_gen), m, steps=3, seed=2, batch_size=1).images
    assert np.array_equal(col, sample_sync(load_generator(psd_gen), m, steps=3, seed=2, batch_size=4).images)
    assert not np.array_equal(col, white)
    # the added noise has the card's spectrum: its finest differences are weak, unlike white noise's
    added_col, added_white = col.astype(float) - clean, white.astype(float) - clean
    fine = lambda a: np.abs(np.diff(a, axis=-1)).mean() / a.std()  # noqa: E731
    assert fine(added_col) < 0.8 * fine(added_white)
    # an explicit pixel_noise stays white of that std
    assert np.array_equal(sample_sync(load_generator(psd_gen), m, steps=3, seed=2, pixel_noise=0).images, clean)


def test_trained_generators_fit_their_noise_and_kept_vaes_keep_it(tmp_path):
    from _generate_helpers import disks, tiny_config

    from napari_cellgen._progress import run
    from napari_cellgen.generate.train import train_generator

    base = tiny_generator(tmp_path / "gen")
    psd = load_generator(base).vae_card["noise_psd"]
    assert psd["size"] == 32 and len(psd["power"]) == 17 and max(psd["power"]) > 0
    images, masks = disks()
    out = tmp_path / "tuned"
    run(train_generator(images, masks, out, tiny_config(vae_steps=0, diffusion_steps=2), val_slices=[4], init=base))
    assert load_generator(out).vae_card["noise_psd"] == psd
