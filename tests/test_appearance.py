"""Appearance augmentation (``--appearance``): strong, label-preserving changes of how EM looks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _train_helpers import blob_stack

from napari_cellgen.train.augment import LIMITS, appearance, augment, resample


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _batch(n: int = 8, c: int = 5, size: int = 64, seed: int = 0):
    """(img, mask): ``n`` copies of one 2.5D patch (dark disks on a bright background), ``c`` slices."""
    img, mask = blob_stack(c, size, seed, radius=(5, 9), margin=10, blobs=3, contrast=110, noise=8)
    x = torch.from_numpy(img.astype(np.float32) / 255.0)[None].repeat(n, 1, 1, 1)
    m = torch.from_numpy((mask[c // 2] > 0).astype(np.float32))[None, None].repeat(n, 1, 1, 1)
    return x, m


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_strength_zero_is_todays_augment_bit_for_bit():
    x, m = _batch()
    g0, g1 = _gen(3), _gen(3)
    a_img, a_mask = augment(x.clone(), m.clone(), g0, elastic_p=0.5)
    b_img, b_mask = augment(x.clone(), m.clone(), g1, elastic_p=0.5, appearance=0.0)
    assert torch.equal(a_img, b_img) and torch.equal(a_mask, b_mask)
    assert torch.equal(g0.get_state(), g1.get_state())  # nothing more drawn: later batches alike too
    g = _gen(1)
    state = g.get_state()
    assert appearance(x, g, 0.0) is x and torch.equal(g.get_state(), state)


def _spread(img: torch.Tensor) -> tuple[float, float]:
    """The spread over the batch of each sample's mean and of its standard deviation."""
    flat = img.flatten(1)
    return float(flat.mean(1).std()), float(flat.std(1).std())


def test_strength_one_spreads_intensity_statistics_widely():
    x, m = _batch(64, size=48)
    mild, _ = augment(x.clone(), m.clone(), _gen(0), elastic_p=0.0)
    strong, _ = augment(x.clone(), m.clone(), _gen(0), elastic_p=0.0, appearance=1.0)
    (mean0, std0), (mean1, std1) = _spread(mild), _spread(strong)
    assert mean1 > 2.5 * mean0 and std1 > 2.5 * std0, (mean0, mean1, std0, std1)
    lo, hi = LIMITS
    assert float(strong.min()) >= lo and float(strong.max()) <= hi and torch.isfinite(strong).all()
    # some copies come out inverted (the foreground brighter than the background), most do not
    fg = m[:, 0] > 0.5
    inside = (strong[:, 2] * fg).flatten(1).sum(1) / fg.flatten(1).sum(1)
    outside = (strong[:, 2] * ~fg).flatten(1).sum(1) / (~fg).flatten(1).sum(1)
    inverted = int((inside > outside).sum())
    assert 1 <= inverted <= 20, inverted


def test_half_strength_lies_between():
    x, m = _batch(64, size=48)
    spreads = [_spread(appearance(x, _gen(0), s))[0] for s in (0.25, 1.0)]
    assert spreads[0] < spreads[1]


def test_mask_unchanged_and_shape_dtype_kept():
    x, m = _batch(16)
    m2 = m.clone()
    m2[:, :, :4] = 0.5  # a soft edge and an emphasis-like second channel survive untouched too
    m2 = torch.cat([m2, 2 * m2], 1)
    img0, mask0 = augment(x.clone(), m2.clone(), _gen(5), elastic_p=0.3)
    img1, mask1 = augment(x.clone(), m2.clone(), _gen(5), elastic_p=0.3, appearance=1.0)
    assert torch.equal(mask0, mask1)  # geometry identical, appearance never touches the mask
    assert not torch.equal(img0, img1)
    out = appearance(x, _gen(0), 1.0)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(x, _batch(16)[0])  # the input itself is not modified in place


def test_deterministic_given_the_generator_seed():
    x, _ = _batch(8)
    a, b, c = (appearance(x, _gen(s), 1.0) for s in (7, 7, 8))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("c", [1, 3])
def test_any_context_width(c):
    x, m = _batch(8, c=c)
    out, mask = augment(x.clone(), m.clone(), _gen(0), appearance=1.0)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert torch.equal(mask, augment(x.clone(), m.clone(), _gen(0))[1])


def _high_power(img: torch.Tensor) -> float:
    """Share of the spectral power above half the Nyquist frequency."""
    p = torch.fft.rfft2(img - img.mean((-2, -1), keepdim=True)).abs() ** 2
    fy = torch.fft.fftfreq(img.shape[-2]).abs()[:, None]
    fx = torch.fft.rfftfreq(img.shape[-1])[None, :]
    high = torch.maximum(fy, fx) > 0.25
    return float(p[..., high].sum() / p.sum())


def test_resolution_jitter_removes_high_frequencies():
    noise = torch.rand(4, 3, 128, 128, generator=_gen(0))
    before = _high_power(noise)
    assert before > 0.6  # white noise: power is spread evenly
    assert _high_power(resample(noise, 0.5)) < 0.2 * before
    assert _high_power(resample(noise, 0.8)) < _high_power(noise)
    assert torch.equal(resample(noise, 1.0), noise)
    assert resample(noise, 0.5).shape == noise.shape


def test_single_slice_context_and_thickness_mixing():
    from napari_cellgen.train.augment import mix_slices

    x = torch.rand(2, 5, 16, 16, generator=_gen(0))
    thick = mix_slices(x, torch.tensor([0.6, 0.0]))
    assert torch.equal(thick[1], x[1])
    d = lambda t: float((t[:, 1:] - t[:, :-1]).abs().mean())  # noqa: E731
    assert d(thick[:1]) < d(x[:1])  # thicker sections: neighbouring slices more alike
    assert d(mix_slices(x, torch.tensor([-0.3, -0.3]))) > d(x)  # thinner: more different
    # at full strength about 1 sample in 10 gets the centre slice in every channel (independent-slice
    # context): its first and centre slices then correlate almost fully (noise and per-slice gain aside)
    xs, _ = _batch(128, size=32)

    def corr(t):
        a, b = (t[:, k].flatten(1) - t[:, k].flatten(1).mean(1, keepdim=True) for k in (0, 2))
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-8)

    assert float(corr(xs).max()) < 0.6
    assert 2 <= int((corr(appearance(xs, _gen(0), 1.0)) > 0.95).sum()) <= 30


def test_config_validates_appearance():
    from napari_cellgen.train.loop import TrainConfig

    assert TrainConfig(appearance=1.0).validate().appearance == 1.0
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="--appearance"):
            TrainConfig(appearance=bad).validate()


def test_cli_passes_appearance_to_the_config():
    from napari_cellgen import cli
    from napari_cellgen.commands.train import build_config

    args = cli.build_parser().parse_args(["train", "--images", "a.tif", "--masks", "b.tif", "-o", "m",
                                          "--model", "scratch", "--appearance", "0.7"])
    assert build_config(args).appearance == 0.7
    args = cli.build_parser().parse_args(["train", "--images", "a.tif", "--masks", "b.tif", "-o", "m",
                                          "--model", "scratch"])
    assert build_config(args).appearance == 0.0


def test_two_step_training_with_full_appearance(tmp_path):
    from napari_cellgen._progress import run
    from napari_cellgen.models.store import load_model
    from napari_cellgen.train.loop import TrainConfig, train_segmenter

    img, mask = blob_stack(3, 64, 0, radius=(4, 9), margin=8, blobs=4, contrast=110, noise=12)
    cfg = TrainConfig(steps=2, scale=1.0, context=1, base=4, depth=2, patch=32, batch=4, val_every=2,
                      tile=64, overlap=16, lr=1e-2, seed=0, threads=1, val_fraction=0.34, appearance=1.0)
    run(train_segmenter([(img, mask, None)], tmp_path / "m", cfg))
    _, card = load_model(tmp_path / "m")
    assert card["training"]["config"]["appearance"] == 1.0
