"""The model runs at its training pixel size, and thick sections are not read as thin ones."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from napari_cellgen.segment.physical import adapt, section_spacing
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


def _tissue(n=81, size=128, seed=0):
    """An isotropic random texture (smoothed noise): neighbouring slices 1 pixel apart."""
    from scipy import ndimage as ndi

    vol = ndi.gaussian_filter(np.random.default_rng(seed).normal(size=(n, size, size)), 2.0)
    return np.clip(128 + vol / vol.std() * 40, 0, 255).astype(np.uint8)


def test_section_spacing_is_measured_from_the_image():
    vol = _tissue()
    for step in (1, 4, 8):
        assert section_spacing(vol[::step]) == pytest.approx(step, rel=0.35), step
    assert section_spacing(vol[:1]) is None and section_spacing(vol[0]) is None  # one slice: nothing to compare
    assert section_spacing(np.zeros((4, 64, 64), np.uint8)) is None  # flat slices: cannot tell


def test_thick_sections_without_a_z_spacing_are_each_their_own_context():
    vol = _tissue()
    card, own, msgs = adapt(CARD, None, image=vol[::8])  # 8 px apart, the model's 5 nm: 40 nm sections
    assert own and "look about" in msgs[-1] and "--z-context neighbours" in msgs[-1]
    assert "no pixel size" in msgs[0]  # and the xy pixel size it assumed is said too
    assert not adapt(CARD, None, image=vol)[1]  # thin sections: neighbours stay context
    assert not adapt(CARD, None, image=vol[::2])[1]  # 2x: below the switch, as with a given spacing
    assert adapt(CARD, (5.0, 10.0, 10.0), image=vol[::2])[1] is False  # the file's z spacing wins
    assert adapt(CARD, (10.0, 10.0), image=vol[::2])[1]  # 10 nm pixels, 2 px apart: 20 nm, 4x the model's
    assert not adapt(CARD, None, image=vol[::8], z_context="neighbours")[1]


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
    # no z spacing at all: measured from the image (neighbours this different are thick sections)
    measured = segment(img, opts, model=(probe, CARD))
    forced = segment(img, SegmentOptions(device="cpu", min_size=1, tta=1, measure=False, slices="volume",
                                         z_context="self"), model=(probe, CARD))
    assert "look about" in measured.message and (measured.labels == forced.labels).all()
    assert (measured.labels[0, 25:35, 25:35] > 0).all()


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


def test_thick_sections_left_to_auto_are_segmented_with_the_model_for_other_em():
    from napari_cellgen._sample_data import sample_paths
    from napari_cellgen.io import read_stack
    from napari_cellgen.models.store import DEFAULT_MODEL, THICK_SECTIONS_MODEL

    img_path, gt_path = sample_paths()
    image = np.asarray(read_stack(img_path)[0])[::6]  # 2 sections 30 nm apart, no pixel size given
    truth = np.asarray(read_stack(gt_path)[0])[::6] > 0
    opts = dict(device="cpu", views=1, measure=False)
    res = segment(image, SegmentOptions(**opts))  # the model left to the plugin
    assert res.card["name"] == THICK_SECTIONS_MODEL and "thick sections: segmented with" in res.message
    iou = np.logical_and(res.labels > 0, truth).sum() / np.logical_or(res.labels > 0, truth).sum()
    assert iou > 0.6, iou
    chosen = segment(image, SegmentOptions(model=DEFAULT_MODEL, **opts))  # a model the user chose is kept
    assert chosen.card["name"] == DEFAULT_MODEL and "own context" in chosen.message
    thin = segment(np.asarray(read_stack(img_path)[0])[:2], SegmentOptions(model="auto", **opts))
    assert thin.card["name"] == DEFAULT_MODEL and "thick" not in thin.message


def test_an_unknown_pixel_size_is_said_not_silently_assumed():
    """A file without a pixel size is read at the model's: the user is told, with what to do (a 15 nm
    stack read as 5 nm finds nothing: benchmarks/results/pixel_size_guess_probe.json)."""
    _, _, msgs = adapt(CARD, None, ndim=2)
    assert any("no pixel size" in m and "5 nm" in m and "--pixel-size" in m for m in msgs)
    _, _, msgs = adapt(CARD, (5.0, 5.0), ndim=2)
    assert not any("no pixel size" in m for m in msgs)
    _, _, msgs = adapt({k: v for k, v in CARD.items() if k != "pixel_size_nm"}, None, ndim=2)
    assert msgs == []  # a model that does not know its own pixel size cannot say anything about it
