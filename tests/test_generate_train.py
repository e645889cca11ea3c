"""Training a generator: --slices restricts the masks it sees; stopping keeps what was written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from _generate_helpers import disks, tiny_config

from napari_cellgen._progress import run
from napari_cellgen.cli import main
from napari_cellgen.generate.store import GeneratorError, load_generator
from napari_cellgen.generate.train import GeneratorDataError, train_generator


class SpyMasks:
    """A lazily indexable mask stack that records (and forbids) the slices read."""

    def __init__(self, data, allowed):
        self.data, self.allowed, self.read = data, set(allowed), set()
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim

    def __getitem__(self, z):
        self.read.add(int(z))
        if int(z) not in self.allowed:
            raise AssertionError(f"the mask of slice {z} was read but is not in --slices")
        return self.data[z]


def test_only_the_masks_of_slices_are_read(tmp_path):
    images, masks = disks(z=6)
    spy = SpyMasks(masks, allowed=[1, 2])
    res = run(train_generator(images, spy, tmp_path / "g", tiny_config(), slices=[1, 2], val_slices=[5]))
    assert spy.read == {1, 2}
    tr = res["denoiser"]["training"]
    assert tr["mask_slices"] == [1, 2] and not tr["val_masks_used"]
    assert tr["image_slices"] == [0, 1, 2, 3, 4]  # every non-validation image still trains
    assert res["layout"]["slices"] == [1, 2]


def test_cli_slices_restrict_layout_statistics(tmp_path):
    images, masks = disks(z=5, size=96, radius=(14, 18))
    small_img, small = disks(z=1, size=96, radius=(3, 5), seed=3)
    images[1], masks[1] = small_img[0], small[0]  # slice 1: only small objects
    tifffile.imwrite(tmp_path / "img.tif", images)
    tifffile.imwrite(tmp_path / "mask.tif", masks * 255)
    out = tmp_path / "gen"
    rc = main(
        [
            "train-generator",
            "--images",
            str(tmp_path / "img.tif"),
            "--masks",
            str(tmp_path / "mask.tif"),
            "-o",
            str(out),
            "--slices",
            "1",
            "--val-slices",
            "4",
            "--vae-steps",
            "2",
            "--diffusion-steps",
            "2",
            "--vae-patch",
            "32",
            "--vae-channels",
            "8,16,32",
            "--unet-channels",
            "32,32",
            "--latent-variants",
            "1",
            "--tile",
            "32",
            "--vae-batch",
            "2",
            "--diffusion-batch",
            "2",
            "--quiet",
        ]
    )
    assert rc == 0
    layout = json.loads((out / "layout.json").read_text())
    assert layout["slices"] == [1]
    # would fail if the large objects of any other slice had been read
    assert max(np.exp(r[0]) for r in layout["objects"]) < 14
    assert load_generator(out).denoiser_card["training"]["mask_slices"] == [1]


def test_stopping_keeps_a_usable_or_clearly_incomplete_folder(tmp_path):
    images, masks = disks()
    cfg = tiny_config(vae_steps=4, diffusion_steps=50, val_every=100)
    it = train_generator(images, masks, tmp_path / "g", cfg, val_slices=[4])
    for p in it:
        if p.stage == "diffusion" and p.done == 2:
            break
    it.close()
    gen = load_generator(tmp_path / "g")
    assert gen.denoiser_card["training"]["steps"] == 2

    it = train_generator(images, masks, tmp_path / "h", cfg, val_slices=[4])
    for p in it:
        if p.stage == "vae" and p.done == 1:
            break
    it.close()
    assert (tmp_path / "h" / "vae" / "model.safetensors").is_file()
    with pytest.raises(GeneratorError, match="denoiser|latent_scale"):
        load_generator(tmp_path / "h")


def test_bad_slice_choices(tmp_path):
    images, masks = disks()
    with pytest.raises(GeneratorDataError, match="also validation"):
        run(train_generator(images, masks, tmp_path / "g", tiny_config(), slices=[0, 4], val_slices=[4]))
    with pytest.raises(GeneratorDataError, match="outside"):
        run(train_generator(images, masks, tmp_path / "g", tiny_config(), slices=[9]))
    with pytest.raises(GeneratorDataError, match="shape"):
        run(train_generator(images, masks[:, :32], tmp_path / "g", tiny_config()))


def test_fine_tune_from_init_keeps_vae(tmp_path):
    images, masks = disks()
    base = run(train_generator(images, None, tmp_path / "base", tiny_config(), val_slices=[4]))
    assert base["denoiser"]["training"]["mask_slices"] == []
    with pytest.raises(GeneratorError, match="no mask-layout"):
        from napari_cellgen.generate.sample import sample_sync

        sample_sync(load_generator(tmp_path / "base"), None, 1, steps=1)
    ft = run(
        train_generator(
            images,
            masks,
            tmp_path / "ft",
            tiny_config(vae_steps=0),
            slices=[0],
            val_slices=[4],
            init=tmp_path / "base",
        )
    )
    assert ft["vae"]["latent_scale"] == base["vae"]["latent_scale"]
    a = (tmp_path / "base" / "vae" / "model.safetensors").read_bytes()
    assert a == (tmp_path / "ft" / "vae" / "model.safetensors").read_bytes()


def test_latent_and_mask_crops_stay_aligned_under_every_variant():
    """Fake 'latents' = the mask's own block means: every crop must match its mask crop."""
    import torch
    from torch.nn import functional as F

    from napari_cellgen.generate.train import VARIANTS, LatentBatches, dihedral

    _, masks = disks(z=2, size=64, per_slice=3)
    masks[:, :20, :8] = 1  # break the symmetry
    f = 8
    bools = {z: masks[z] != 0 for z in range(2)}
    latents = {
        v: {
            z: F.avg_pool2d(
                torch.from_numpy(np.ascontiguousarray(dihedral(bools[z], v))).float()[None], f
            ).numpy()
            for z in range(2)
        }
        for v in range(len(VARIANTS))
    }
    b = LatentBatches(latents, bools, [0, 1], 4, f, tiny_config(), seed=0)
    for v in range(len(VARIANTS)):
        for z in range(2):
            for y, x in [(0, 0), (2, 3), (4, 1)]:
                lat, m = b.item(z, v, y, x, True, 4)
                expect = F.avg_pool2d(torch.from_numpy(np.ascontiguousarray(m)).float()[None], f).numpy()
                assert np.allclose(lat, expect)


def test_fresh_denoiser_keeps_only_the_vae(tmp_path, monkeypatch):
    """--fresh-denoiser: the init's denoiser (which saw other masks) is not the starting point."""
    import napari_cellgen.generate.train as gt

    images, masks = disks()
    run(train_generator(images, masks, tmp_path / "base", tiny_config(), val_slices=[4]))
    starts = []
    original = gt.train_denoiser

    def spy(*args, **kw):
        starts.append(args[7])  # the denoiser to continue from (None = a new one)
        return original(*args, **kw)

    monkeypatch.setattr(gt, "train_denoiser", spy)
    for fresh in (False, True):
        res = run(
            train_generator(images, masks, tmp_path / f"ft{fresh}", tiny_config(vae_steps=0), slices=[1],
                            val_slices=[4], init=tmp_path / "base", fresh_denoiser=fresh)
        )
        assert res["denoiser"]["training"]["init_parts"] == ("vae" if fresh else "vae+denoiser")
        vae = (tmp_path / f"ft{fresh}" / "vae" / "model.safetensors").read_bytes()
        assert vae == (tmp_path / "base" / "vae" / "model.safetensors").read_bytes()
    assert starts[0] is not None and starts[1] is None


def test_minutes_budget_stops_on_time_and_is_recorded(tmp_path):
    """--minutes: each stage stops when its share is spent (the step counts are only bounds)."""
    images, masks = disks(z=5)
    tifffile.imwrite(tmp_path / "img.tif", images)
    tifffile.imwrite(tmp_path / "mask.tif", masks * 255)
    out = tmp_path / "gen"
    rc = main(["train-generator", "--images", str(tmp_path / "img.tif"), "--masks", str(tmp_path / "mask.tif"),
               "-o", str(out), "--val-slices", "4", "--minutes", "0.05", "--vae-steps", "100000",
               "--diffusion-steps", "100000", "--val-every", "100000", "--vae-patch", "32",
               "--vae-channels", "8,16,32", "--unet-channels", "32,32", "--latent-variants", "1", "--tile", "32",
               "--vae-batch", "2", "--diffusion-batch", "2", "--quiet"])
    assert rc == 0
    gen = load_generator(out)  # complete and loadable
    vae_tr, den_tr = gen.vae_card["training"], gen.denoiser_card["training"]
    budget = den_tr["budget"]
    assert budget["minutes"] == 0.05 and budget["vae_minutes"] == pytest.approx(0.4 * 0.05)
    assert den_tr["config"]["minutes"] == 0.05
    assert vae_tr["stopped_by"] == "time" and 1 <= vae_tr["steps"] < 100000
    assert budget["vae_steps_done"] == vae_tr["steps"]
    assert vae_tr["time_s"] < 60 * budget["vae_minutes"] + 5  # one step and the final check past the budget
    assert den_tr["stopped_by"] == "time" and 1 <= den_tr["steps_done"] < 100000
    assert den_tr["minutes"] == pytest.approx(budget["diffusion_minutes"], abs=1e-3)
    # what the VAE, its checks and the encoding left (on a busy machine maybe nothing: one step then)
    assert 0 <= budget["diffusion_minutes"] <= 0.05 - budget["vae_minutes"]

    # a kept VAE: all that is left of the budget goes to the denoiser
    res = run(train_generator(images, masks, tmp_path / "ft", tiny_config(vae_steps=0, diffusion_steps=100000,
                                                                           val_every=100000, minutes=0.01),
                              slices=[0], val_slices=[4], init=out))
    tr = res["denoiser"]["training"]
    assert "kept" in tr["budget"]["vae"] and "vae_minutes" not in tr["budget"]
    assert tr["stopped_by"] == "time" and tr["steps_done"] < 100000


def test_minutes_is_validated():
    from napari_cellgen.generate.train import GeneratorConfig

    with pytest.raises(ValueError, match="--minutes"):
        GeneratorConfig(minutes=-1).validate()
    assert GeneratorConfig(minutes=0).validate().minutes == 0


def test_bf16_generator_training_learns_as_fp32_does(tmp_path):
    """--precision bf16: the VAE (with its discriminator) and the denoiser train in bfloat16 autocast;
    the weights stay float32 and the VAE learns as well as in float32."""
    import torch

    images, masks = disks()
    res = {}
    for p in ("fp32", "bf16"):
        cfg = tiny_config(vae_steps=40, diffusion_steps=10, val_every=20, precision=p, adv_weight=0.1, adv_start=0.5)
        res[p] = run(train_generator(images, masks, tmp_path / p, cfg, val_slices=[4]))
    assert res["bf16"]["denoiser"]["training"]["config"]["precision"] == "bf16"
    # the same seeds: bfloat16 follows float32's validation curve (reconstruction L1, [-1, 1] units)
    curves = {p: [h["l1"] for h in r["vae"]["training"]["history"]] for p, r in res.items()}
    assert len(curves["bf16"]) == len(curves["fp32"]) >= 2
    assert np.allclose(curves["bf16"], curves["fp32"], atol=0.02), curves
    assert curves["bf16"] != curves["fp32"]  # and the arithmetic did change
    assert np.isfinite(res["bf16"]["denoiser"]["metrics"]["val_loss_uncond"])
    gen = load_generator(tmp_path / "bf16")
    assert {q.dtype for q in gen.vae.parameters()} == {q.dtype for q in gen.denoiser.parameters()} == {torch.float32}
    with pytest.raises(ValueError, match="precision"):
        tiny_config(precision="fp16").validate()


class _FakeVAE:
    """encode -> identity posterior; decode -> ``fn`` of the latent: a stand-in decoder of known detail."""

    def __init__(self, fn):
        import torch

        self.fn, self.p = fn, torch.nn.Parameter(torch.zeros(1))

    def parameters(self):
        return iter([self.p])

    def encode(self, x):
        return type("Post", (), {"mean": x})()

    def decode(self, z):
        return self.fn(z)

    def eval(self):
        return self

    def train(self):
        return self


def test_added_pixel_noise_makes_up_the_fine_detail_the_decoder_lacks():
    """noise_std = sqrt(real^2 - decoded^2) of the white-noise measure: a decoder that draws the noise
    itself gets none added; one that draws none gets the images' own noise; half of it, the rest."""
    import torch

    from napari_cellgen.generate.train_vae import estimate_noise_std

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    smooth = 0.5 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
    noise = rng.normal(0, 0.1, (12, 1, 64, 64))
    tiles = (smooth + noise).astype(np.float32)
    smooth_t = torch.from_numpy(np.broadcast_to(smooth, tiles.shape).astype(np.float32))

    def part(k):  # the smooth image plus a fraction k of the noise of the tiles it is given
        return lambda z: smooth_t[: len(z)] + k * (z - smooth_t[: len(z)])

    assert estimate_noise_std(_FakeVAE(part(1.0)), tiles) == pytest.approx(0.0, abs=1e-6)
    assert estimate_noise_std(_FakeVAE(part(0.0)), tiles) == pytest.approx(0.1, rel=0.05)
    assert estimate_noise_std(_FakeVAE(part(0.6)), tiles) == pytest.approx(0.08, rel=0.05)


def test_adversarial_loss_joins_after_its_share_of_a_time_budget(tmp_path):
    """With a time budget (step bound far away) the PatchGAN loss still starts at adv_start of the time,
    weighted adaptively (VQGAN): a finite positive balance is reported with the discriminator's loss."""
    from napari_cellgen.generate.config import GeneratorConfig
    from napari_cellgen.generate.train_vae import train_vae

    rng = np.random.default_rng(0)
    vol = {z: rng.uniform(-1, 1, (64, 64)).astype(np.float32) for z in range(3)}
    cfg = GeneratorConfig(vae_steps=10**6, vae_minutes=0.02, vae_batch=2, vae_patch=32, adv_weight=0.5,
                          adv_start=0.5, val_every=10**6, warmup=1)
    infos = [p.info for p in train_vae(vol, [0, 1, 2], None, tmp_path / "v", cfg)]
    adv = [i for i in infos if "adv_lambda" in i]
    assert infos[0].keys().isdisjoint({"adv_lambda", "d_loss"})  # not from the start
    assert adv and len(adv) < len(infos)
    assert all(0 < i["adv_lambda"] < 1e4 and np.isfinite(i["d_loss"]) for i in adv)
