"""``precision="int8"``: the segmenter quantized on the CPU, calibrated on the image, gives the same objects."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellgen._sample_data import sample_paths
from napari_cellgen.io import read_stack
from napari_cellgen.models.store import DEFAULT_MODEL
from napari_cellgen.segment.pipeline import SegmentOptions, get_model, segment


def _sample(n=3):
    img_path, gt_path = sample_paths()
    image, meta = read_stack(img_path)
    return np.asarray(image)[:n], np.asarray(read_stack(gt_path)[0])[:n] > 0, meta.get("pixel_size_nm")


def _iou(a, b):
    return np.logical_and(a, b).sum() / np.logical_or(a, b).sum()


def test_int8_finds_the_same_mitochondria_as_fp32():
    image, gt, px = _sample()
    fp = segment(image, SegmentOptions(model=DEFAULT_MODEL, device="cpu", measure=False, precision="fp32"),
                 pixel_size=px)
    q = segment(image, SegmentOptions(model=DEFAULT_MODEL, device="cpu", measure=False, precision="int8"),
                pixel_size=px)
    assert fp.options["precision"] == "fp32" and q.options["precision"] == "int8"
    assert _iou(q.labels > 0, fp.labels > 0) > 0.95
    assert _iou(q.labels > 0, gt) > 0.6 and abs(_iou(q.labels > 0, gt) - _iou(fp.labels > 0, gt)) < 0.02
    # a single 2D image too
    q2 = segment(image[1], SegmentOptions(model=DEFAULT_MODEL, device="cpu", measure=False, precision="int8"),
                 pixel_size=px)
    assert _iou(q2.labels > 0, fp.labels[1] > 0) > 0.9


def test_the_quantized_network_is_int8_and_the_cached_one_untouched():
    import torch

    from napari_cellgen.segment.quantize import calibration_batches, quantize

    image, _, _ = _sample(2)
    net, card = get_model(DEFAULT_MODEL, "cpu")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    calib = calibration_batches(card, image)
    assert calib and calib[0].shape[1] == 2 * card["context"] + 1
    q = quantize(net, calib)
    kinds = {type(m).__module__ for m in q.modules()}
    assert any("quantized" in k for k in kinds)  # int8 kernels, not the float network
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the cached model is not changed
    assert next(net.parameters()).is_contiguous(memory_format=torch.channels_last)


def test_bad_precision_and_int8_with_workers_are_refused(tmp_path, capsys):
    import tifffile

    from napari_cellgen.cli import main

    with pytest.raises(ValueError, match="precision"):
        SegmentOptions(precision="fp16").validate()
    image, _, _ = _sample(2)
    tifffile.imwrite(tmp_path / "em.tif", image)
    rc = main(["segment", str(tmp_path / "em.tif"), "-o", str(tmp_path / "s.tif"), "--precision", "int8",
               "--workers", "2", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "--precision int8" in err and "Traceback" not in err
    assert not (tmp_path / "s.tif").exists()
    rc = main(["segment", str(tmp_path / "em.tif"), "-o", str(tmp_path / "s.tif"), "--precision", "int8",
               "--quiet"])
    assert rc == 0 and tifffile.imread(tmp_path / "s.tif").max() > 0


def test_auto_precision_is_int8_on_the_cpu_and_fp32_where_int8_cannot_run(tmp_path):
    import torch

    from napari_cellgen.segment.blockwise import segment_blockwise
    from napari_cellgen.segment.quantize import resolve_precision

    image, gt, px = _sample(2)
    assert SegmentOptions().precision == "auto"
    auto = segment(image, SegmentOptions(model=DEFAULT_MODEL, device="cpu", measure=False), pixel_size=px)
    assert auto.options["precision"] == "int8" and "int8" not in auto.message
    assert _iou(auto.labels > 0, gt) > 0.6
    assert resolve_precision("auto", "cuda") == resolve_precision("auto", "cpu", in_process=False) == "fp32"
    assert resolve_precision("fp32", "cpu") == "fp32"
    from napari_cellgen.segment.blockwise import check_precision

    assert check_precision("auto") == check_precision("fp32") == "fp32"  # a cluster's workers run fp32
    with pytest.raises(ValueError, match="int8 runs in this process only"):
        check_precision("int8")

    class Untraceable(torch.nn.Module):  # data-dependent control flow: FX cannot quantize it
        def forward(self, x):
            return x[:, :1] if float(x.mean()) > -1e9 else x[:, 1:2]

    _, card = get_model(DEFAULT_MODEL, "cpu")
    got = segment(image, SegmentOptions(measure=False, min_size=1), model=(Untraceable(), dict(card)), pixel_size=px)
    assert got.options["precision"] == "fp32" and "int8 not possible for this model" in got.message
    with pytest.raises(TypeError, match="Proxy"):  # asked for explicitly, int8 is not quietly replaced
        segment(image, SegmentOptions(measure=False, precision="int8"), model=(Untraceable(), dict(card)),
                pixel_size=px)
    # a dask cluster's workers run fp32 under "auto"
    res = segment_blockwise(image, tmp_path / "l.zarr", SegmentOptions(model=DEFAULT_MODEL, measure=False),
                            pixel_size=px)
    assert res.n_objects > 0
