"""Offset noise and the loss-weight floor: what training draws, what the card records, what sampling reads."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from _generate_helpers import disks, tiny_config

from napari_cellgen._progress import run
from napari_cellgen.generate.sample import sample_sync
from napari_cellgen.generate.schedule import draw_noise, loss_weights, noise_offset, train_scheduler
from napari_cellgen.generate.store import load_generator
from napari_cellgen.generate.train import train_generator


def test_offset_noise_spreads_each_channels_mean():
    shape = (3000, 4, 32, 32)
    plain = draw_noise(shape, torch.Generator().manual_seed(0), 0.0)
    assert torch.equal(plain, torch.randn(shape, generator=torch.Generator().manual_seed(0)))
    # white noise over 32x32: a channel's mean has std 1/32; the offset adds its own std in quadrature
    assert plain.mean((2, 3)).std().item() == pytest.approx(1 / 32, rel=0.05)
    off = draw_noise(shape, torch.Generator().manual_seed(0), 0.1)
    assert off.mean((2, 3)).std().item() == pytest.approx((0.1**2 + 1 / 32**2) ** 0.5, rel=0.05)
    # the offset is one constant per sample and channel: what is left is the same white noise
    assert torch.allclose(off - off.mean((2, 3), keepdim=True), plain - plain.mean((2, 3), keepdim=True), atol=1e-5)


def test_weight_floor_lifts_both_ends_and_keeps_the_middle():
    acp = train_scheduler().alphas_cumprod.float()
    plain = loss_weights(acp, "v_prediction", 5.0)
    floored = loss_weights(acp, "v_prediction", 5.0, floor=0.25)
    assert plain[-1] < 1e-6 and plain.max() == pytest.approx(5 / 6, rel=1e-3)  # min-SNR-5 for v-prediction
    assert plain[0] < 0.01  # it also down-weights the lowest noise (5 / (snr + 1))
    assert floored.min() == pytest.approx(0.25)
    keep = plain >= 0.25
    assert keep[400:600].all() and not keep[-100:].any() and not keep[:50].any()
    assert torch.equal(floored[keep], plain[keep])


def test_training_records_the_noise_and_sampling_follows_the_card(tmp_path):
    images, masks = disks()
    out = tmp_path / "gen"
    run(train_generator(images, masks, out, tiny_config(offset_noise=0.2, snr_weight_floor=0.25), val_slices=[4]))
    card = json.loads((out / "denoiser" / "card.json").read_text())
    assert card["noise"] == {"offset": 0.2, "snr_weight_floor": 0.25}
    gen = load_generator(out)
    assert noise_offset(gen.denoiser_card) == 0.2
    m = masks[:4]
    a = sample_sync(gen, m, steps=3, seed=3, batch_size=4)
    b = sample_sync(gen, m, steps=3, seed=3, batch_size=1)  # the same seed gives the same images
    assert np.array_equal(a.images, b.images)
    # the same weights, their card without the offset: sampling starts from other noise
    plain = tmp_path / "plain"
    shutil.copytree(out, plain)
    (plain / "denoiser" / "card.json").write_text(json.dumps({k: v for k, v in card.items() if k != "noise"}))
    gen_plain = load_generator(plain)
    assert noise_offset(gen_plain.denoiser_card) == 0.0
    assert not np.array_equal(a.images, sample_sync(gen_plain, m, steps=3, seed=3).images)

@pytest.mark.parametrize("key,flag", [("offset_noise", "--offset-noise"), ("snr_weight_floor", "--snr-weight-floor")])
def test_bad_noise_options_are_named(key, flag):
    with pytest.raises(ValueError, match=flag):
        tiny_config(**{key: -0.1}).validate()
