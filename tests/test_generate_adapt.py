"""Adapting a generator to the user's microscope without retraining it (acquire.py, adapt.py)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import tifffile
from _generate_helpers import disks, tiny_config, tiny_generator
from scipy.ndimage import gaussian_filter
from test_generate_train import SpyMasks

from napari_cellgen._progress import run
from napari_cellgen.cli import main
from napari_cellgen.generate.acquire import apply_acquisition, fit_acquisition
from napari_cellgen.generate.sample import sample_sync
from napari_cellgen.generate.store import GeneratorError, load_generator
from napari_cellgen.generate.train import GeneratorDataError, train_generator


def _tissue(n: int, size: int, seed: int) -> np.ndarray:
    """Texture with structure at several scales, grey 128 +- 40."""
    rng = np.random.default_rng(seed)
    x = gaussian_filter(rng.normal(size=(n, size, size)), (0, 3, 3)) + 0.3 * gaussian_filter(
        rng.normal(size=(n, size, size)), (0, 1, 1))
    x = (x - x.mean()) / x.std()
    return np.clip(128 + 40 * x, 0, 255).astype(np.uint8)


def _microscope(images: np.ndarray, blur: float, noise: float, seed: int = 0) -> np.ndarray:
    """Half the resolution (area mean), a blur, gamma 0.6, Gaussian noise: another microscope."""
    n, h, w = images.shape
    small = images.astype(np.float64).reshape(n, h // 2, 2, w // 2, 2).mean((2, 4)) / 255
    small = np.stack([gaussian_filter(s, blur) for s in small]) ** 0.6 * 255
    out = small + np.random.default_rng(seed).normal(0, noise, small.shape)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def test_the_fit_finds_the_blur_and_noise_of_a_microscope_it_never_saw():
    generated = _tissue(24, 256, 0)
    user = _microscope(_tissue(24, 256, 1), blur=1.0, noise=20)  # other tissue, seen through the microscope
    p = fit_acquisition(generated, user, scale=0.5)
    assert p["blur_sigma"] in (0.75, 1.0, 1.25)
    assert abs(p["noise_sigma"] - 20) < 6
    assert p["spectrum_distance"] < 0.2 * p["spectrum_distance_before"]
    out, _ = apply_acquisition(generated, None, p)
    assert out.shape == (24, 128, 128) and out.dtype == np.uint8
    assert abs(out.mean() - user.mean()) < 5 and abs(out.std() - user.std()) < 5
    # the unfitted microscope is far from the user's images: the test can fail
    assert abs(generated.mean() - user.mean()) > 15


def test_rendered_masks_stay_on_their_objects():
    images, masks = disks(z=3, size=64)
    identity = {"scale": 0.5, "blur_sigma": 0.0, "noise_sigma": 0.0, "tone": [[0, 255], [0, 255]]}
    im, m = apply_acquisition(images, masks, identity)
    assert im.shape == m.shape == (3, 32, 32)
    assert im[m > 0].mean() > im[m == 0].mean() + 50
    assert abs((m > 0).mean() - (masks > 0).mean()) < 0.02


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def base(tmp_path):
    """The tiny generator with a recorded pixel size of 5 nm (as mito-gen's VAE card has)."""
    gen = tiny_generator(tmp_path / "base")
    card = json.loads((gen / "vae" / "card.json").read_text())
    card["pixel_size_nm"] = 5.0
    (gen / "vae" / "card.json").write_text(json.dumps(card))
    return gen


def _user_volume():
    """A 10 nm microscope: brighter, inverted contrast and noisy compared with the generator's disks."""
    img, masks = disks(z=6, size=128, seed=3, radius=(6, 10), per_slice=4)
    img = np.clip(250 - 0.6 * img.astype(np.float64) + np.random.default_rng(0).normal(0, 15, img.shape), 0, 255)
    return img.astype(np.uint8), masks


def test_adapting_keeps_the_networks_and_generates_the_users_images(base, tmp_path):
    img, masks = _user_volume()
    spy = SpyMasks(masks, allowed=[2])
    res = run(train_generator(img, spy, tmp_path / "mine", tiny_config(adapt="acquisition", name="mine"),
                              slices=[2], init=base, pixel_size_nm=10.0))
    assert spy.read == {2}  # only the labelled slice's mask
    gen = load_generator(tmp_path / "mine")
    assert gen.acquisition["scale"] == 0.5 and gen.layout["slices"] == [2]
    assert res["acquisition"]["spectrum_distance"] < res["acquisition"]["spectrum_distance_before"]
    for part in ("vae", "denoiser"):  # the networks are the parent's, byte for byte
        assert _sha(tmp_path / "mine" / part / "model.safetensors") == _sha(base / part / "model.safetensors")
    assert gen.name == "mine" and gen.denoiser_card["adapted"]["mode"] == "acquisition"

    drawn = masks[4][:64, :64]  # a mask drawn over the user's image, in the user's pixels
    mine = sample_sync(gen, drawn, steps=3, allow_empty=True)
    parent = sample_sync(load_generator(base), drawn, steps=3, allow_empty=True)
    assert mine.images.shape == (1, 64, 64) and np.array_equal(mine.masks[0], drawn)
    gap = abs(float(mine.images.mean()) - float(img.mean()))
    assert gap < 15 and gap < abs(float(parent.images.mean()) - float(img.mean())) - 20
    pairs = sample_sync(gen, None, n=2, steps=3, shape=(96, 96))  # new pairs come in the user's pixels too
    assert pairs.images.shape == pairs.masks.shape == (2, 96, 96)
    raw = sample_sync(gen, None, n=1, steps=3, shape=(96, 96), acquisition=False)
    assert raw.images.shape == (1, 96, 96)
    from napari_cellgen.generate.store import export_generator

    export_generator(tmp_path / "mine", tmp_path / "exported")  # what ships keeps the microscope
    assert load_generator(tmp_path / "exported").acquisition == gen.acquisition


def test_acquisition_needs_a_generator_to_start_from(tmp_path):
    img, masks = _user_volume()
    with pytest.raises(GeneratorDataError, match="generator to start from"):
        run(train_generator(img, masks, tmp_path / "g", tiny_config(adapt="acquisition")))


def test_a_broken_acquisition_file_is_named(base, tmp_path):
    (base / "acquisition.json").write_text(json.dumps({"scale": 0.5}))
    with pytest.raises(GeneratorError, match="acquisition.json is not a valid acquisition model"):
        load_generator(base)


def test_cli_adapts_by_default_from_a_generator_and_says_what_it_fitted(base, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CELLGEN_USER_DIR", str(tmp_path / "user"))
    img, masks = _user_volume()
    tifffile.imwrite(tmp_path / "em.tif", img)
    tifffile.imwrite(tmp_path / "m.tif", masks)
    code = main(["train-generator", "--images", str(tmp_path / "em.tif"), "--masks", str(tmp_path / "m.tif"),
                 "--slices", "1,3", "--generator", str(base), "--pixel-size", "10", "--minutes", "30",
                 "-o", str(tmp_path / "mine"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "adapted" in err and "pixel scale 0.5" in err and "layouts from 2 labelled slices" in err
    assert load_generator(tmp_path / "mine").acquisition is not None
    code = main(["synth", "-o", str(tmp_path / "syn"), "--n", "2", "--generator", str(tmp_path / "mine"),
                 "--steps", "2", "--quiet"])
    assert code == 0
    assert tifffile.imread(tmp_path / "syn" / "images.tif").shape == (2, 32, 32)  # the tile, in the user's px
    # --adapt acquisition without a generator: one line, exit 2
    code = main(["train-generator", "--images", str(tmp_path / "em.tif"), "--adapt", "acquisition",
                 "-o", str(tmp_path / "x")])
    assert code == 2 and "needs --generator" in capsys.readouterr().err
