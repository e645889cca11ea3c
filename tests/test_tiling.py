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


def test_blended_weights_are_normalised_on_a_smooth_ramp():
    # a pixel-wise model (b*2) passes with any blend weights that are divided by their sum;
    # seams of a model with a receptive field: test_tiled_output_matches_the_untiled_model...
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


def test_fused_model_stays_on_its_device_and_dtype():
    """``cellgen segment --device cuda`` loads the model onto the GPU, then folds batch norm: the folded
    convolutions must be made there too (they were made on the CPU: 'Input type (torch.cuda.FloatTensor)
    and weight type (torch.FloatTensor) should be the same', seen on an H200). The meta device stands in
    for the GPU here: the same rule, no GPU needed."""
    import torch

    from napari_cellgen.models.unet import UNet, fuse_batchnorm

    net = UNet(3, 1, base=4, depth=2).to(device="meta", dtype=torch.float64)
    fused = fuse_batchnorm(net)
    kinds = {(p.device.type, p.dtype) for p in fused.parameters()}
    assert kinds == {("meta", torch.float64)}


def _box5(batch):
    """A fixed 5x5 box-filter convolution, zero-padded like the U-Net's: a receptive field of 5x5,
    so a tile edge inside the image shows (2 px of zero padding) unless the blending hides it."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(batch[:, :1]))
    return torch.nn.functional.conv2d(x, torch.full((1, 1, 5, 5), 1 / 25), padding=2)[:, 0].numpy()


@pytest.mark.parametrize("shape,divisor", [((200, 200), 1), ((150, 230), 16)])
def test_tiled_output_matches_the_untiled_model_away_from_the_border(shape, divisor):
    # the stand-in of the other tests (b*2) is pixel-wise, so any blend weights would pass them;
    # a model with a receptive field is wrong near every tile edge, and only the blending
    # (edge pixels weigh almost nothing where another tile covers them) keeps the seams out
    plane = np.random.default_rng(0).random((1, *shape), dtype=np.float32)
    whole = _box5(plane[None])[0]  # the model on the whole plane at once: no tile edges
    tiled = run(predict_plane(_box5, plane, tile=64, overlap=16, batch_size=4, divisor=divisor))
    m = 10  # the image border (padding to the divisor, the model's own zero padding) is not a seam
    err = np.abs(tiled - whole)[m:-m, m:-m]
    assert err.max() < 5e-3, err.max()  # 3.3e-3 with the cosine window; 0.37 with no blending
    # and the test can see a seam: the same tiles, each pasted whole (no blending), differ there
    pasted = run(predict_plane(_box5, plane, tile=64, overlap=0, batch_size=4, divisor=divisor))
    assert np.abs(pasted - whole)[m:-m, m:-m].max() > 0.05
