"""The model runs at its training pixel size, and thick sections are not read as thin ones."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from napari_cellgen.segment.physical import adapt
from napari_cellgen.segment.pipeline import SegmentOptions, segment

CARD = {"context": 1, "scale": 0.5, "pixel_size_nm": [5.0, 5.0, 5.0], "tile": 64, "overlap": 16,
        "architecture": {"depth": 2}, "normalization": {"low": 1.0, "high": 99.0}, "name": "probe"}


def test_scale_follows_the_pixel_size():
    card, own, msgs = adapt(CARD, (5.0, 5.0, 5.0))
    assert card["scale"] == 0.5 and not own and msgs == []
    card, own, msgs = adapt(CARD, (10.0, 10.0, 10.0))
    assert card["scale"] == pytest.approx(1.0) and "resized by 1" in msgs[0]
    assert CARD["scale"] == 0.5  # the caller's card is not changed
    assert adapt(CARD, None)[0]["scale"] == 0.5  # unknown pixel size: the card's own scale
    assert adapt({**CARD, "pixel_size_nm": None}, (10, 10, 10))[0]["scale"] == 0.5
    with pytest.raises(ValueError, match="too coarse"):
        adapt(CARD, (100.0, 100.0, 100.0))
    with pytest.raises(ValueError, match="positive"):
        adapt(CARD, (0.0, 5.0, 5.0))


def test_anisotropy_decides_the_context():
    assert not adapt(CARD, (10.0, 5.0, 5.0))[1]  # 2x thicker sections: still neighbours
    card, own, msgs = adapt(CARD, (50.0, 5.0, 5.0))  # ssTEM-like: 10x
    assert own and "own context" in msgs[0]
    assert not adapt(CARD, (50.0, 5.0, 5.0), z_context="neighbours")[1]
    assert adapt(CARD, (5.0, 5.0, 5.0), z_context="self")[1]
    assert not adapt(CARD, (50.0, 5.0), ndim=2)[1]


class Probe(nn.Module):
    """Foreground = the centre channel is dark AND its neighbours agree; records the input size."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def forward(self, x):
        self.sizes.append(tuple(x.shape[-2:]))
        c = x.shape[1] // 2
        agree = 1 - (x[:, :1] - x[:, c : c + 1]).abs() - (x[:, -1:] - x[:, c : c + 1]).abs()
        return (0.5 - x[:, c : c + 1]) * 20 + (agree - 0.8) * 20


def _stack():
    img = np.full((5, 64, 64), 200, np.uint8)
    img[:, 20:40, 20:40] = 40
    img[1::2, 20:40, 20:40] = 200  # every other section differs: neighbours disagree
    img[1::2, 5:15, 5:15] = 40
    return img


def test_pipeline_rescales_and_switches_context():
    probe = Probe()
    img = _stack()
    opts = SegmentOptions(device="cpu", min_size=1, tta=1, measure=False, slices="volume")
    probe.sizes.clear()
    segment(img, opts, model=(probe, CARD), pixel_size=(5.0, 5.0, 5.0))
    assert max(s[0] for s in probe.sizes) == 32  # 64 px at scale 0.5
    probe.sizes.clear()
    res = segment(img, opts, model=(probe, CARD), pixel_size=(5.0, 10.0, 10.0))
    assert max(s[0] for s in probe.sizes) == 64 and "resized by 1" in res.message  # 10 nm: scale 1
    thin = segment(img, opts, model=(probe, CARD), pixel_size=(5.0, 10.0, 10.0)).labels
    thick = segment(img, opts, model=(probe, CARD), pixel_size=(50.0, 10.0, 10.0))
    assert "own context" in thick.message
    # disagreeing neighbours erase the dark squares when read as context, not when each slice is its own
    assert (thin[0, 25:35, 25:35] == 0).all()
    assert (thick.labels[0, 25:35, 25:35] > 0).all() and (thick.labels[1, 7:13, 7:13] > 0).all()


def test_a_given_pixel_size_is_used_when_the_file_has_none():
    probe = Probe()
    img = _stack()
    opts = SegmentOptions(device="cpu", min_size=1, views=1, measure=False, slices="volume",
                          pixel_size=(5.0, 10.0, 10.0))
    res = segment(img, opts, model=(probe, CARD))
    assert max(s[0] for s in probe.sizes) == 64 and "resized by 1" in res.message
    probe.sizes.clear()
    res = segment(img, SegmentOptions(device="cpu", min_size=1, views=1, measure=False, slices="volume",
                                      pixel_size=(10.0,)), model=(probe, CARD))  # one number: every axis
    assert max(s[0] for s in probe.sizes) == 64
    with pytest.raises(ValueError, match="pixel-size"):
        SegmentOptions(pixel_size=(0.0,)).validate()
    with pytest.raises(ValueError, match="1 or 3 numbers"):
        segment(img, SegmentOptions(device="cpu", pixel_size=(5.0, 5.0)), model=(probe, CARD))


@pytest.mark.parametrize("value", ["abc", "0", "5,5,5,5", "nan"])
def test_cli_refuses_a_bad_pixel_size_in_one_line(tmp_path, capsys, value):
    import tifffile

    from napari_cellgen.cli import main

    tifffile.imwrite(tmp_path / "em.tif", np.zeros((3, 32, 32), np.uint8))
    try:
        rc = main(["segment", str(tmp_path / "em.tif"), "-o", str(tmp_path / "l.tif"), "--pixel-size", value])
    except SystemExit as exc:  # argparse's own refusal
        rc = exc.code
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "pixel" in err and "Traceback" not in err
    assert not (tmp_path / "l.tif").exists()
