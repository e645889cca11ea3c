import numpy as np
import pytest

from napari_cellgen._progress import run
from napari_cellgen.segment.preprocess import context_indices
from napari_cellgen.segment.tiling import blend_window, predict_plane


def identity(batch):
    return batch[:, 0].copy()


@pytest.mark.parametrize(
    "shape", [(1, 1), (1, 7), (5, 3), (31, 64), (64, 64), (100, 37), (257, 300), (513, 129)]
)
@pytest.mark.parametrize("tile,overlap", [(64, 16), (32, 0), (48, 20)])
def test_identity_model_reconstructs_exactly(shape, tile, overlap):
    rng = np.random.default_rng(0)
    plane = rng.random((1, *shape), dtype=np.float32)
    out = run(predict_plane(identity, plane, tile=tile, overlap=overlap, batch_size=3))
    assert out.shape == shape
    np.testing.assert_allclose(out, plane[0], rtol=1e-5, atol=1e-6)


def test_divisor_respected_and_progress_counts():
    seen = []

    def fn(batch):
        assert batch.shape[-1] % 16 == 0 and batch.shape[-2] % 16 == 0
        seen.append(batch.shape[0])
        return batch[:, 0]

    plane = np.ones((3, 70, 90), np.float32)
    gen = predict_plane(fn, plane, tile=32, overlap=8, batch_size=2, divisor=16)
    prog = []
    while True:
        try:
            prog.append(next(gen))
        except StopIteration as stop:
            out = stop.value
            break
    assert prog[-1].done == prog[-1].total
    assert len(prog) == -(-prog[-1].total // 2)  # one yield per batch of 2 tiles
    np.testing.assert_allclose(out, 1.0)


@pytest.mark.parametrize("shape", [(64, 96), (96, 200), (32, 48)])
def test_tiles_stay_inside_a_plane_that_fits_the_divisor(shape):
    # the segmenters never saw mirrored image borders in training: a plane that is a
    # multiple of the divisor must reach the model unpadded, tile after tile
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    plane = (y * 1000 + x)[None]
    grid = np.mgrid[0:32, 0:48].astype(np.float32)
    tiles = []

    def fn(batch):
        for t in batch[:, 0]:
            th, tw = t.shape
            tiles.append(t)
            np.testing.assert_array_equal(t - t[0, 0], grid[0][:th, :tw] * 1000 + grid[1][:th, :tw])
        return batch[:, 0]

    out = run(predict_plane(fn, plane, tile=32, overlap=8, divisor=16))
    np.testing.assert_allclose(out, plane[0], rtol=1e-6)
    assert len(tiles) >= 1


def test_border_margin_and_uneven_planes_are_padded_evenly():
    seen = []

    def fn(batch):
        seen.append(batch.shape[-2:])
        return batch[:, 0]

    plane = np.random.default_rng(0).random((1, 40, 40), dtype=np.float32)
    out = run(predict_plane(fn, plane, tile=64, overlap=0, divisor=16))
    assert seen[-1] == (48, 48)  # 40 -> 48: 4 reflected pixels each side, not 8 on one
    np.testing.assert_allclose(out, plane[0], rtol=1e-6)
    seen.clear()
    out = run(predict_plane(fn, plane, tile=64, overlap=0, divisor=16, border=8))
    assert seen[-1] == (64, 64)
    np.testing.assert_allclose(out, plane[0], rtol=1e-6)


def test_blending_has_no_seams_on_a_smooth_ramp():
    # a model with a constant bias per tile position would show seams; a smooth
    # input through a translation-equivariant model must stay smooth
    y, x = np.mgrid[0:200, 0:200].astype(np.float32)
    plane = (x + y)[None] / 400

    out = run(predict_plane(lambda b: b[:, 0] * 2, plane, tile=64, overlap=16))
    d = np.abs(np.diff(out, axis=1))
    assert d.max() < 0.011


def test_window_positive():
    w = blend_window((16, 16))
    assert w.min() > 0 and w.shape == (16, 16)


def test_stopping_between_tiles():
    calls = []

    def fn(batch):
        calls.append(1)
        return batch[:, 0]

    gen = predict_plane(fn, np.zeros((1, 256, 256), np.float32), tile=64, overlap=0, batch_size=1)
    next(gen)
    next(gen)
    gen.close()
    assert len(calls) == 2


def test_context_indices_mirror():
    assert context_indices(0, 5, 1) == [1, 0, 1]
    assert context_indices(4, 5, 1) == [3, 4, 3]
    assert context_indices(0, 1, 2) == [0, 0, 0, 0, 0]


def test_fused_batchnorm_matches_eval_model():
    import copy

    import torch

    from napari_cellgen.models.unet import UNet, fuse_batchnorm

    torch.manual_seed(0)
    net = UNet(3, 1, base=4, depth=2)
    net.train()
    for _ in range(3):  # give the BN layers non-trivial running statistics
        net(torch.randn(2, 3, 32, 32) * 3 + 1)
    net.eval()
    x = torch.randn(1, 3, 32, 32)
    fused = fuse_batchnorm(copy.deepcopy(net))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    with torch.no_grad():
        torch.testing.assert_close(fused(x), net(x), rtol=1e-4, atol=1e-5)
