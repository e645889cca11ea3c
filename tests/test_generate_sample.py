"""Sampling a tiny trained generator: determinism, alignment, mask validation, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from _generate_helpers import disks, tiny_generator

from napari_cellgen.cli import main
from napari_cellgen.generate.sample import MaskError, check_masks, sample, sample_sync
from napari_cellgen.generate.store import load_generator


@pytest.fixture
def gen(tmp_path):
    return load_generator(tiny_generator(tmp_path / "gen"))


def _masks(n=3, h=32, w=32):
    m = np.zeros((n, h, w), np.uint8)
    for i in range(n):
        m[i, 4 + i : 20 + i, 6:22] = 1
    return m


def test_same_seed_same_output(gen):
    m = _masks()
    a = sample_sync(gen, m, steps=4, seed=7)
    b = sample_sync(gen, m, steps=4, seed=7, batch_size=1)  # batch size does not change the result
    c = sample_sync(gen, m, steps=4, seed=8)
    assert np.array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)


def test_conditioned_images_align_with_masks(gen):
    m = _masks(2, 32, 64)
    res = sample_sync(gen, m, steps=3, seed=0, sampler="ddim", guidance=3.0)
    assert res.images.shape == m.shape and res.images.dtype == np.uint8
    assert np.array_equal(res.masks, m)
    one = sample_sync(gen, m[0], steps=2)  # a single 2D mask
    assert one.images.shape == (1, 32, 64)
    odd = np.zeros((1, 40, 50), np.uint8)
    odd[0, 5:25, 10:30] = 3
    padded = sample_sync(gen, odd, steps=2, pad=True)  # any size, e.g. a Labels layer
    assert padded.images.shape == (1, 40, 50) and np.array_equal(padded.masks, odd)


def test_new_pairs_and_unconditional(gen):
    pairs = sample_sync(gen, None, 3, steps=2, seed=1, shape=(32, 32))
    assert pairs.images.shape == pairs.masks.shape == (3, 32, 32)
    again = sample_sync(gen, None, 3, steps=2, seed=1, shape=(32, 32))
    assert np.array_equal(pairs.images, again.images) and np.array_equal(pairs.masks, again.masks)
    unc = sample_sync(gen, None, 2, steps=2, pairs=False)
    assert unc.masks is None and unc.images.shape == (2, 32, 32)


def test_progress_and_stop(gen):
    it = sample(gen, _masks(), steps=5, seed=0, batch_size=1)
    seen = [next(it) for _ in range(3)]
    assert seen[-1].stage == "sample" and seen[-1].total == 3 * 6
    it.close()  # stopping between steps is fine


def test_mask_errors(gen):
    with pytest.raises(MaskError, match="multiples of 16"):
        sample_sync(gen, np.ones((1, 30, 30), np.uint8))
    with pytest.raises(MaskError, match="dtype float"):
        sample_sync(gen, np.ones((1, 32, 32), np.float32))
    with pytest.raises(MaskError, match="empty"):
        sample_sync(gen, np.zeros((0, 32, 32), np.uint8))
    with pytest.raises(MaskError, match="no mitochondria"):
        sample_sync(gen, np.zeros((2, 32, 32), np.uint8))
    with pytest.raises(MaskError, match="2D mask"):
        check_masks(np.ones((1, 1, 32, 32), np.uint8))
    ok = sample_sync(gen, np.zeros((1, 32, 32), np.uint8), steps=1, allow_empty=True)
    assert ok.images.shape == (1, 32, 32)
    assert issubclass(MaskError, ValueError)


def test_cli_sample(tmp_path, capsys):
    gdir = tiny_generator(tmp_path / "gen")
    mpath = tmp_path / "masks.tif"
    tifffile.imwrite(mpath, _masks(2) * 255)
    out1, out2 = tmp_path / "a.tif", tmp_path / "b.tif"
    for out in (out1, out2):
        assert (
            main(
                [
                    "sample",
                    "-o",
                    str(out),
                    "--masks",
                    str(mpath),
                    "--generator",
                    str(gdir),
                    "--steps",
                    "2",
                    "--seed",
                    "5",
                    "--quiet",
                ]
            )
            == 0
        )
    a, b = tifffile.imread(out1), tifffile.imread(out2)
    assert a.shape == (2, 32, 32) and a.dtype == np.uint8 and np.array_equal(a, b)
    pout = tmp_path / "pairs.tif"
    assert main(["sample", "-o", str(pout), "--n", "2", "--generator", str(gdir), "--steps", "2", "--quiet"]) == 0
    imgs, masks = tifffile.imread(pout), tifffile.imread(tmp_path / "pairs_masks.tif")
    assert imgs.shape == (2, 256, 256) or imgs.shape == masks.shape
    assert imgs.shape == masks.shape
    tifffile.imwrite(tmp_path / "bad.tif", np.ones((2, 30, 30), np.uint8))
    rc = main(
        [
            "sample",
            "-o",
            str(tmp_path / "c.tif"),
            "--masks",
            str(tmp_path / "bad.tif"),
            "--generator",
            str(gdir),
            "--quiet",
        ]
    )
    assert rc == 2 and "multiples of 16" in capsys.readouterr().err


def test_disks_helper_is_sane():
    images, masks = disks()
    assert images[masks == 1].mean() > images[masks == 0].mean() + 40


def test_stochastic_sampler_is_seeded_per_image(gen):
    m = _masks()
    a = sample_sync(gen, m, steps=4, seed=7, sampler="dpm++sde", pixel_noise=0.0)
    b = sample_sync(gen, m, steps=4, seed=7, sampler="dpm++sde", pixel_noise=0.0, batch_size=1)
    ode = sample_sync(gen, m, steps=4, seed=7, sampler="dpm++", pixel_noise=0.0)
    assert np.array_equal(a.images, b.images)  # each image's step noise is its own stream
    assert not np.array_equal(a.images, ode.images)  # the steps did draw noise


def test_pixel_noise_is_seeded_and_batch_independent(gen):
    assert gen.vae_card["noise_std"] >= 0  # measured at training time
    m = _masks()
    a = sample_sync(gen, m, steps=2, seed=4, pixel_noise=0.2)
    b = sample_sync(gen, m, steps=2, seed=4, pixel_noise=0.2, batch_size=1)
    clean = sample_sync(gen, m, steps=2, seed=4, pixel_noise=0.0)
    assert np.array_equal(a.images, b.images)
    assert not np.array_equal(a.images, clean.images)
    with pytest.raises(ValueError, match="pixel_noise"):
        sample_sync(gen, m, steps=1, pixel_noise=-1)


def test_generated_images_have_the_training_images_grey_levels(gen):
    """[-1, 1] stands for each training slice's 1-99 % grey levels; generated images map back to the
    training images' (median) levels, the VAE card's grey_range, instead of being stretched to 0-255."""
    import dataclasses

    from napari_cellgen.generate.config import prepare_slice
    from napari_cellgen.generate.train import slice_grey_levels

    images, _ = disks()
    lo, hi = gen.vae_card["grey_range"]
    levels = [slice_grey_levels(s) for s in images[:4]]  # slice 4 validates
    for s, (a, b) in zip(images[:4], levels, strict=True):  # the levels each slice's [-1, 1] stood for
        x = prepare_slice(s)
        inside = (s > a) & (s < b)
        assert np.allclose(x[inside], (s[inside] - a) / (b - a) * 2 - 1, atol=1e-5)
    assert (lo, hi) == pytest.approx(tuple(np.median(levels, axis=0)))
    assert 0 < lo < hi < 255
    m = _masks()
    a = sample_sync(gen, m, steps=3, seed=1, pixel_noise=0).images
    assert a.min() >= round(lo) and a.max() <= round(hi)
    stretched = dataclasses.replace(gen, vae_card={k: v for k, v in gen.vae_card.items() if k != "grey_range"})
    b = sample_sync(stretched, m, steps=3, seed=1, pixel_noise=0).images  # old cards: -1 -> 0, 1 -> 255
    assert np.abs(a - (lo + b / 255.0 * (hi - lo))).max() <= 1.0
    assert b.max() - b.min() > a.max() - a.min()


def test_noise_tails_pass_beyond_the_training_range_only_when_asked(gen):
    """Clipped noise piles pixels onto the grey range's two ends; real slices' darkest and brightest
    1 % lie beyond their 1-99 % range, and ``noise_tails`` lets the noise reach there too."""
    lo, hi = gen.vae_card["grey_range"]
    m = _masks()
    clipped = sample_sync(gen, m, steps=3, seed=1, pixel_noise=0.4).images
    tails = sample_sync(gen, m, steps=3, seed=1, pixel_noise=0.4, noise_tails=True).images
    assert clipped.min() >= round(lo) and clipped.max() <= round(hi)
    assert tails.min() < round(lo) - 2 and tails.max() > round(hi) + 2
    inside = (tails > round(lo)) & (tails < round(hi))  # where neither was clipped they are the same
    assert np.array_equal(tails[inside], clipped[inside])
