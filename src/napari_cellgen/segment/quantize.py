"""int8 inference on the CPU: the segmenter quantized after training, calibrated on the image it segments.

Static post-training quantization with torch's FX graph mode (``torch.ao.quantization``): every
convolution and activation in int8, except the four up-convolutions (``ConvTranspose2d``), whose
quantized kernels ruin the output on torch 2.13 (probabilities off by up to 1 on x86 and fbgemm,
refused by onednn), so they stay float. The activation ranges are observed on tiles of the image
being segmented (the centres of the tiles of up to :data:`CALIBRATION_SLICES` slices spread
through it, one view: about 3 s on 2 cores), so nothing else has to ship and a user's own
contrast is what is calibrated for.

Measured by ``benchmarks/speed_candidates.py`` and ``benchmarks/segment_speed.py --precision int8``
(docs/benchmarks.md): on a 2-core x86 CPU the network runs about 2.4x faster and the whole
``cellgen segment`` 1.7x, with the same foreground IoU on the held-out Lucchi slices.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Generator

import numpy as np

from .._progress import Progress

PRECISIONS = ("auto", "fp32", "int8")
ENGINE = "x86"


def resolve_precision(precision: str, device: str = "cpu", in_process: bool = True) -> str:
    """"auto" -> "int8" on the CPU in this process when torch has the int8 engine, else "fp32".

    int8 is the default where it runs: 1.7x faster whole-process with the same IoU, and less memory
    (docs/benchmarks.md). A cluster's workers and GPUs run fp32.
    """
    if precision != "auto":
        return precision
    import torch

    ok = in_process and str(device).startswith("cpu") and ENGINE in torch.backends.quantized.supported_engines
    return "int8" if ok else "fp32"


CALIBRATION_SLICES = 4
CROP = 256  # model pixels of each calibration tile observed (its centre)


class BatchRecorder:
    """A stand-in network that keeps the batches ``predict_stack`` feeds it (and returns zeros).

    The batches are kept as numpy copies (an inference-mode tensor is refused by the quantization
    observers and by ``torch.onnx.export``); :meth:`tensors` gives them back as ordinary tensors.
    """

    def __init__(self):
        self.batches: list[np.ndarray] = []

    def __call__(self, x):
        import torch

        self.batches.append(np.ascontiguousarray(x.detach().cpu().numpy()).copy())
        return torch.zeros((x.shape[0], 1, *x.shape[2:]), dtype=x.dtype)

    def tensors(self) -> list:
        import torch

        return [torch.from_numpy(b) for b in self.batches]


def calibration_iter(card: dict, image, *, tile=None, overlap=None, batch: int = 4,
                     independent: bool = False) -> Generator[Progress, None, list[np.ndarray]]:
    """The input batches the pipeline makes for up to CALIBRATION_SLICES slices spread through ``image``;
    yields Progress ("calibrate int8") per batch of tiles, so a job can be cancelled while it runs."""
    from .predict import predict_stack

    rec = BatchRecorder()
    kw = {"tile": tile, "overlap": overlap, "batch_size": batch, "device": "cpu", "tta": 1,
          "independent": independent}
    if image.ndim == 2:
        jobs = [predict_stack(rec, card, image, np.zeros(image.shape, np.uint8), **kw)]
    else:
        n = image.shape[0]
        zs = sorted({int(z) for z in np.linspace(0, n - 1, min(CALIBRATION_SLICES, n)).round()})
        jobs = [predict_stack(rec, card, image, np.zeros((1, *image.shape[1:]), np.uint8), zs=range(z, z + 1), **kw)
                for z in zs]
    for i, job in enumerate(jobs):
        for _ in job:
            yield Progress(i, len(jobs), "calibrate int8")
    yield Progress(len(jobs), len(jobs), "calibrate int8")
    return rec.batches


def calibration_batches(card: dict, image, **kw) -> list[np.ndarray]:
    """:func:`calibration_iter` run to the end (scripts and tests)."""
    from .._progress import run

    return run(calibration_iter(card, image, **kw))


def quantize(model, calibration: list[np.ndarray], engine: str = ENGINE):
    """An int8 copy of ``model`` (float, eval mode), its activation ranges observed on ``calibration``."""
    import torch
    from torch import nn
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if not calibration:
        raise ValueError("int8 needs at least one calibration batch")
    if engine not in torch.backends.quantized.supported_engines:
        raise RuntimeError(f"this torch build has no {engine!r} quantized engine "
                           f"(it has {', '.join(torch.backends.quantized.supported_engines)}): use --precision fp32")
    torch.backends.quantized.engine = engine
    # the U-Net's skip connections concatenate tensors quantized with different scales: torch requantizes
    # them (measured: the same objects as fp32) and warns on every forward, which a user cannot act on
    warnings.filterwarnings("ignore", message="All inputs of this cat operator must share", category=UserWarning)
    net = copy.deepcopy(model).float().eval().to(memory_format=torch.contiguous_format)
    qmap = get_default_qconfig_mapping(engine).set_object_type(nn.ConvTranspose2d, None)
    example = torch.from_numpy(calibration[0])
    with warnings.catch_warnings():  # torch.ao.quantization announces its successor on every call
        warnings.simplefilter("ignore")
        prepared = prepare_fx(net, qmap, example_inputs=(example,))
        with torch.no_grad():
            for b in calibration:
                h, w = b.shape[2:]  # the centre of each tile: a third of the observers' time, same ranges
                b = b[:, :, max(0, (h - CROP) // 2):(h + CROP) // 2, max(0, (w - CROP) // 2):(w + CROP) // 2]
                prepared(torch.from_numpy(np.ascontiguousarray(b)).contiguous(memory_format=torch.channels_last))
        return convert_fx(prepared).eval()
