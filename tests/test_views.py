"""Test-time augmentation views reach inference on every path (in memory, blockwise, CLI).

The stand-in model is not flip-equivariant: its logit at a pixel is
``A*sign(dI/dx) + B*sign(dI/dy) + C*sign(dI/dx)*sign(dI/dy)``. On an image that rises to
the right and downwards, each view, flipped back, gives

    identity  A + B + C      flip x  -A + B - C
    flip y    A - B - C      rotate 180°  -A - B + C

so 1 view gives A + B + C, 2 views (image + 180° rotation) C, and 4 views 0: three different
probabilities, whatever the path does between the option and the model.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from napari_cellgen import cli
from napari_cellgen.models.store import save_model
from napari_cellgen.models.unet import UNet
from napari_cellgen.segment import pipeline
from napari_cellgen.segment.blockwise import segment_blockwise
from napari_cellgen.segment.pipeline import SegmentOptions, segment

A, B, C = 1.0, 0.5, 2.0
EXPECT = {1: A + B + C, 2: C, 4: 0.0}  # the averaged logit in the image's interior
CARD = {"context": 0, "scale": 1.0, "tile": 64, "overlap": 8,
        "normalization": {"kind": "percentile", "low": 1.0, "high": 99.0},
        "architecture": {"in_channels": 1, "out_channels": 1, "base": 2, "depth": 2}, "name": "slopes"}


class Slopes(torch.nn.Module):
    """Logits from the signs of the image's forward differences in x and y (see the module docstring)."""

    def forward(self, x):
        c = x[:, x.shape[1] // 2 : x.shape[1] // 2 + 1].float()
        dx = torch.nn.functional.pad(c[..., :, 1:] - c[..., :, :-1], (0, 1)).sign()
        dy = torch.nn.functional.pad(c[..., 1:, :] - c[..., :-1, :], (0, 0, 0, 1)).sign()
        return A * dx + B * dy + C * dx * dy


def _ramp(n=3):
    y, x = np.mgrid[0:64, 0:64]
    return np.repeat((2 * x + 2 * y).astype(np.uint8)[None], n, 0)  # rises along x and along y


def _expected_uint8(views):
    return int(np.round(255 / (1 + np.exp(-EXPECT[views]))))


def _interior(a):
    return np.asarray(a)[..., 8:-8, 8:-8]


def test_the_stand_in_tells_the_views_apart():
    values = {v: _expected_uint8(v) for v in EXPECT}
    assert len(set(values.values())) == 3, values


@pytest.mark.parametrize("views", [1, 2, 4])
def test_views_reach_inference_in_memory(views):
    got = segment(_ramp(), SegmentOptions(precision="fp32", views=views, measure=False, device="cpu"),
                  model=(Slopes(), dict(CARD)))
    prob = _interior(got.probabilities)
    assert prob.dtype == np.uint8
    np.testing.assert_allclose(prob, _expected_uint8(views), atol=1)


@pytest.mark.parametrize("views", [1, 2, 4])
def test_views_reach_inference_blockwise(tmp_path, views):
    import zarr

    segment_blockwise(_ramp(4), tmp_path / "l.zarr",
                      SegmentOptions(precision="fp32", views=views, measure=False, device="cpu"),
                      block_z=2, prob_out=tmp_path / "p.zarr", model=(Slopes(), dict(CARD)))
    prob = zarr.open_array(str(tmp_path / "p.zarr" / "0"), mode="r")[:]
    np.testing.assert_allclose(_interior(prob), _expected_uint8(views), atol=1)


@pytest.mark.parametrize("views", [1, 2, 4])
def test_cli_views_reach_inference(tmp_path, monkeypatch, views):
    monkeypatch.setenv("CELLGEN_USER_DIR", str(tmp_path / "user"))
    model_dir = save_model(tmp_path / "slopes", UNet(1, 1, base=2, depth=2), dict(CARD))  # a real card to check
    monkeypatch.setattr(pipeline, "get_model", lambda name=None, device="cpu": (Slopes(), dict(CARD)))
    src, prob = tmp_path / "ramp.tif", tmp_path / "prob.tif"
    tifffile.imwrite(src, _ramp())
    rc = cli.main(["segment", str(src), "-o", str(tmp_path / "l.tif"), "--probabilities", str(prob),
                   "--model", str(model_dir), "--views", str(views), "--precision", "fp32", "--quiet"])
    assert rc == 0
    np.testing.assert_allclose(_interior(tifffile.imread(prob)), _expected_uint8(views), atol=1)
