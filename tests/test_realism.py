"""The realism measure's machinery on tiny synthetic textures: its controls must behave."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellgen.realism import (
    c2st,
    cluster_bootstrap,
    crop_tiles,
    grey_distance,
    grouped_folds,
    power_spectrum,
    spectrum_bands,
    wilson,
)


def textures(n, size=32, seed=0, blur=0.0):
    """Smoothed noise images as uint8; ``blur`` adds a Gaussian blur of that sigma afterwards."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    t = ndi.gaussian_filter(rng.normal(0, 1, (n, size, size)), (0, 0.7, 0.7))
    t = 128 + 40 * t / t.std()
    if blur:
        t = ndi.gaussian_filter(t, (0, blur, blur))
    return t.clip(0, 255).round().astype(np.uint8)


def test_crops_groups_and_folds():
    tiles = np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8)
    crops, groups = crop_tiles(tiles, 4)
    assert crops.shape == (8, 4, 4) and groups.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert np.array_equal(crops[1], tiles[0, :4, 4:])
    labels = np.repeat([0, 1], 20)
    groups = np.concatenate([np.repeat(np.arange(5), 4), np.repeat(np.arange(5, 10), 4)])
    fold = grouped_folds(labels, groups, 5, np.random.default_rng(0))
    for g in np.unique(groups):
        assert len(set(fold[groups == g])) == 1  # a group is never split
    for f in range(5):  # every fold holds both classes
        assert set(labels[fold == f]) == {0, 1}


def test_intervals():
    lo, hi = wilson(50, 100)
    assert lo < 0.5 < hi and hi - lo == pytest.approx(0.19, abs=0.01)
    assert wilson(100, 100)[1] == pytest.approx(1.0)
    correct = np.repeat([1.0, 0.0], 50)
    # 100 items in 2 groups is 2 observations, not 100: the cluster interval must be wide
    assert np.diff(cluster_bootstrap(correct, np.repeat([0, 1], 50))) > 0.9
    assert np.diff(cluster_bootstrap(correct, np.arange(100)))[0] < 0.25


def test_same_distribution_near_chance_and_blur_caught():
    a, b = textures(80, seed=1), textures(80, seed=2)
    kw = {"folds": 4, "steps": 60, "batch": 32, "width": 8, "n_boot": 200}
    null = c2st(a, b, **kw)
    assert abs(null["accuracy"] - 0.5) < 0.15, null
    assert null["ci95"][0] <= 0.5 <= null["ci95"][1] or abs(null["accuracy"] - 0.5) < 0.1
    blurred = c2st(a, textures(80, seed=2, blur=1.0), **kw)
    assert blurred["accuracy"] > 0.9, blurred
    assert blurred["ci95"][0] > 0.6
    assert blurred["n_a"] == 80 and len(blurred["fold_accuracy"]) == 4


def test_statistics_see_blur_and_not_identity():
    a, b = textures(20, size=64, seed=3), textures(20, size=64, seed=4)
    assert grey_distance(a, a)["pixels_emd"] == 0 and grey_distance(a, b)["pixels_ks"] < 0.05
    bands_same = spectrum_bands(power_spectrum(a), power_spectrum(b), 64)
    bands_blur = spectrum_bands(power_spectrum(a), power_spectrum(textures(20, size=64, seed=4, blur=1.0)), 64)
    assert len(bands_same) == 5 and bands_same[-1]["cycles_per_px"] == [0.25, 0.5]
    # the lowest band has few Fourier coefficients (noisy); the others agree for the same texture
    assert all(abs(b["log10_ratio"]) < 0.05 for b in bands_same[1:])
    assert bands_blur[-1]["log10_ratio"] < -1 and abs(bands_blur[1]["log10_ratio"]) < 0.1
