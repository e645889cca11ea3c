"""Schedulers, denoiser and VAE of the generator (tiny random models, no training)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cellgen.generate.schedule import sampling_scheduler, train_scheduler, training_target
from napari_cellgen.models.denoiser import MaskDenoiser, mask_condition, null_like
from napari_cellgen.models.vae import ConvVAE, ssim


def _oracle(sched, x0):
    """A 'perfect' network for ``x0``: returns the exact v (or epsilon) for any x_t, t."""
    acp = sched.alphas_cumprod.double()

    def f(xt, t):
        a = acp[int(t)]
        eps = (xt.double() - a.sqrt() * x0.double()) / (1 - a).sqrt()
        if sched.config.prediction_type == "epsilon":
            return eps.float()
        return (a.sqrt() * eps - (1 - a).sqrt() * x0.double()).float()

    return f


@pytest.mark.parametrize("prediction", ["v_prediction", "epsilon"])
def test_add_noise_then_one_step_recovers_x0(prediction):
    sched = train_scheduler({"prediction_type": prediction})
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 4, 8, 8, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    sampler = sampling_scheduler("ddim", {"prediction_type": prediction})
    sampler.set_timesteps(20)
    t = sampler.timesteps[5]
    xt = sched.add_noise(x0, noise, torch.tensor([int(t)] * 2))
    pred = _oracle(sched, x0)(xt, t)
    if prediction == "v_prediction":
        assert torch.allclose(pred, training_target(sched, x0, noise, torch.tensor([int(t)] * 2)), atol=1e-4)
    out = sampler.step(pred, t, xt)
    assert torch.allclose(out.pred_original_sample, x0, atol=1e-3)


@pytest.mark.parametrize("kind", ["ddim", "dpm++"])
def test_full_sampling_loop_with_oracle_returns_x0(kind):
    sched = train_scheduler()
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1)).clamp(-2, 2)
    f = _oracle(sched, x0)
    sampler = sampling_scheduler(kind)
    sampler.set_timesteps(25)
    assert int(sampler.timesteps[0]) >= 950  # trailing spacing starts from (almost) pure noise
    x = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2)) * sampler.init_noise_sigma
    for t in sampler.timesteps:
        x = sampler.step(f(x, t), t, x).prev_sample
    assert torch.allclose(x, x0, atol=2e-2)


def test_unknown_sampler():
    with pytest.raises(ValueError, match="unknown sampler"):
        sampling_scheduler("euler-magic")


def _tiny_denoiser():
    torch.manual_seed(0)
    return MaskDenoiser(
        latent_channels=4, factor=8, block_out_channels=(32, 32), attention_levels=(1,)
    ).eval()


def test_denoiser_output_depends_on_timestep_and_mask():
    net = _tiny_denoiser()
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    mask[:, 10:40, 20:50] = True
    cond = mask_condition(mask, 8, (1, 8, 8))
    with torch.inference_mode():
        a = net(x, torch.tensor([10]), cond)
        b = net(x, torch.tensor([900]), cond)
        c = net(x, torch.tensor([10]), null_like(cond))
    assert a.shape == x.shape
    assert (a - b).abs().mean() > 1e-3, "the timestep must change the prediction"
    assert (a - c).abs().mean() > 1e-3, "the mask must change the prediction"


def test_mask_condition_layout():
    m = torch.zeros(2, 16, 16, dtype=torch.bool)
    m[0, :8, :8] = True
    cond = mask_condition(m, 8, (2, 2, 2))
    assert cond.shape == (2, 65, 2, 2)
    assert cond[0, :64, 0, 0].eq(1).all() and cond[0, :64, 1, 1].eq(-1).all()
    assert cond[:, 64].eq(1).all()  # flag: a mask is given
    null = mask_condition(None, 8, (2, 2, 2))
    assert null[:, :64].eq(0).all() and null[:, 64].eq(-1).all()
    with pytest.raises(ValueError, match="latent grid"):
        mask_condition(m, 8, (2, 3, 3))


def test_vae_shapes_and_range():
    torch.manual_seed(0)
    vae = ConvVAE(channels=(8, 16, 32), latent_channels=4).eval()
    assert vae.divisor == 8
    x = torch.rand(2, 1, 64, 96) * 2 - 1
    with torch.inference_mode():
        post = vae.encode(x)
        assert post.mean.shape == (2, 4, 8, 12)
        z = post.sample(torch.Generator().manual_seed(0))
        rec = vae.decode(z)
        assert rec.shape == x.shape
        assert float(post.kl()) >= 0
    from napari_cellgen.generate.sample import to_uint8

    img = to_uint8(rec.clamp(-1, 1))
    assert img.dtype == np.uint8 and img.shape == (2, 64, 96)
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-5)
