"""The whole segmentation job: probabilities -> instance labels -> measurements.

``segment_iter`` is the generator the widgets run in a thread worker; ``segment``
is its synchronous wrapper for scripts and the CLI.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import InitVar, dataclass, field

import numpy as np

from .._progress import Progress, run


@dataclass
class SegmentOptions:
    """The options of one segmentation, named as on the command line (``--views`` is ``views=``).

    ``tile`` and ``overlap`` are in the input image's pixels, like ``cellgen train --patch``;
    :meth:`at_model_scale` converts them with the model card's scale. The former keywords
    ``tta=`` (now ``views``) and ``batch_size=`` (now ``batch``) are still accepted.
    """

    # registered name or folder; None (or "auto") = the shipped default, or for thick sections its twin
    # trained for other EM (auto_model)
    model: str | None = None
    threshold: float = 0.5
    tile: int | None = None  # input pixels; None = the model card's
    overlap: int | None = None  # input pixels; None = the model card's
    min_size: int = 200  # pixels (2D) / voxels (3D)
    mode: str = "3d"  # "3d" or "2d" instance labels
    fill_holes: bool = True
    median: bool = False
    split: bool = False
    device: str = "auto"
    batch: int = 4  # tiles per forward pass
    views: int = 2  # views averaged: 1 (fastest), 2 (+ the 180° rotation), 4 (the four flips)
    measure: bool = True
    # "auto": a stack of unrelated images (or mode "2d") is segmented slice by slice, context
    # included; "volume": neighbours are context; "independent": each slice alone (segment/slices.py)
    slices: str = "auto"
    # the 2.5D context of thick sections: "auto" (each slice is its own context when the image's
    # z spacing is >= 3x the model's), "neighbours" or "self" (segment/physical.py)
    z_context: str = "auto"
    # the image's pixel size in nm, (y, x) or (z, y, x), when its file does not say (it overrides the
    # file's): the model then runs at its training pixel size (segment/physical.py)
    pixel_size: tuple | None = None
    # "int8": the network quantized on the CPU, calibrated on this image (segment/quantize.py); "fp32";
    # "auto": int8 where it runs (the CPU, in this process), else fp32
    precision: str = "auto"
    # how model-resolution probabilities return to the image's pixels: "probability" or "logit"
    # (segment/predict.py:upsample_probs)
    upsample: str = "probability"
    # average each slice's probabilities with its neighbours' (volumes only; segment/postprocess.py:smooth_z)
    z_smooth: bool = False
    # former names, accepted as keywords for a release (and readable as attributes, below)
    tta: InitVar[int | None] = None
    batch_size: InitVar[int | None] = None

    def __post_init__(self, tta, batch_size):
        if tta is not None:
            self.views = tta
        if batch_size is not None:
            self.batch = batch_size

    def at_model_scale(self, card: dict) -> tuple[int | None, int | None]:
        """``(tile, overlap)`` in the model's pixels: input pixels x the card's scale (None = the card's)."""
        scale = float(card.get("scale", 1.0))
        tile = None if self.tile is None else max(1, round(self.tile * scale))
        overlap = None if self.overlap is None else max(0, round(self.overlap * scale))
        return tile, overlap

    def validate(self) -> SegmentOptions:
        """Raise ``ValueError`` naming the first bad option, before any work is done."""
        from .._checks import choice, number
        from .predict import UPSAMPLE, tta_views
        from .quantize import PRECISIONS

        if not 0.0 < self.threshold < 1.0:  # also refuses NaN
            raise ValueError(f"threshold must be between 0 and 1, got {self.threshold}")
        tta_views(self.views)
        number(self.batch, "--batch", lo=1, hi=4096, integer=True)
        number(self.min_size, "--min-size", lo=0, integer=True)
        number(self.tile, "--tile", lo=1, hi=1 << 16, integer=True, none_ok=True)
        number(self.overlap, "--overlap", lo=0, hi=self.tile, hi_open=self.tile is not None, integer=True,
               none_ok=True)
        choice(self.mode, "mode", ("2d", "3d"))
        choice(self.z_context, "z context", ("auto", "neighbours", "self"))
        choice(self.precision, "precision", PRECISIONS)
        choice(self.upsample, "upsample", UPSAMPLE)
        if self.pixel_size is not None:
            if not 1 <= len(tuple(self.pixel_size)) <= 3:
                raise ValueError(f"--pixel-size takes 1 to 3 numbers (z, y, x in nm), got {self.pixel_size!r}")
            for v in self.pixel_size:
                number(v, "--pixel-size", lo=0, hi=1e6, lo_open=True)
        return self

    def smooths_z(self, mode: str, independent: bool) -> bool:
        """Whether :attr:`z_smooth` applies: to 3D labels of a volume whose slices are each other's context."""
        return self.z_smooth and mode == "3d" and not independent


# the former attribute names, read-only (the keywords are InitVars above)
SegmentOptions.tta = property(lambda self: self.views, doc="former name of ``views``")
SegmentOptions.batch_size = property(lambda self: self.batch, doc="former name of ``batch``")


@dataclass
class SegmentResult:
    labels: object
    table: dict | None
    n_objects: int
    card: dict
    probabilities: object = None
    options: dict = field(default_factory=dict)
    message: str = ""  # what the pipeline decided on its own (e.g. slices treated as separate images)


_MODEL_CACHE: dict[tuple, tuple] = {}


def get_model(name=None, device: str = "cpu"):
    """Load (and cache) a model by name or folder, ready for inference.

    Batch norm is folded into the convolutions; on the CPU the weights are stored
    channels-last (with channels-last inputs from :func:`.predict.make_forward`,
    oneDNN runs this U-Net about 1.5x faster on a 2-core CPU, same outputs).
    """
    import torch

    from ..models.store import load_model, resolve
    from ..models.unet import fuse_batchnorm

    folder = resolve(name)
    weights = folder if folder.is_file() else folder / "model.safetensors"  # a .zip package is its own file
    # the weights' mtime is part of the key: a model re-registered under the same name reloads
    key = (str(folder), weights.stat().st_mtime_ns if weights.exists() else 0, device)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE.clear()
        model, card = load_model(name, device)
        model = fuse_batchnorm(model)
        if device == "cpu":
            model = model.to(memory_format=torch.channels_last)
        _MODEL_CACHE[key] = (model, card)
    return _MODEL_CACHE[key]


def auto_model(model: str | None, own_context: bool, z_context: str) -> str | None:
    """The model to use instead when the model was left to the plugin and the sections are thick.

    Thick sections (z spacing >= 3x the model's, given or measured) come from serial-section TEM or
    another protocol, not from Lucchi's FIB-SEM: ``mito-unet-travel``, trained for other microscopes and
    section thicknesses, scores 0.892 vs 0.897 (``mito-unet``) on clean thick Lucchi sections and 0.34-0.88
    vs 0.00-0.30 on degraded ones (v2, docs/benchmarks.md). None: keep the model.
    """
    from ..models.store import AUTO_MODELS, THICK_SECTIONS_MODEL, list_models

    if model not in AUTO_MODELS or not own_context or z_context != "auto":
        return None
    return THICK_SECTIONS_MODEL if THICK_SECTIONS_MODEL in list_models() else None


def switch_for_thick_sections(opt, card, own_context, notes, pixel_size, ndim, device):
    """``(net, card, notes)`` of :func:`auto_model`'s choice, or None to keep the model."""
    from .physical import adapt

    name = auto_model(opt.model, own_context, opt.z_context)
    if name is None:
        return None
    net, new = get_model(name, device)
    new, _, _ = adapt(new, pixel_size, ndim=ndim, z_context="self")  # its scale for this pixel size
    return net, new, [*notes, f"thick sections: segmented with {name} (trained for other EM and section "
                              f"thicknesses; choose the model {card.get('name', 'mito-unet')} to keep it)"]


def segment_iter(
    image,
    options: SegmentOptions | None = None,
    *,
    pixel_size=None,
    prob_out=None,
    labels_out=None,
    model=None,
) -> Generator[Progress, None, SegmentResult]:
    """Segment mitochondria in a (Y, X) image or (Z, Y, X) stack.

    ``prob_out`` (uint8 or float32) and ``labels_out`` (uint32/int64) may be
    caller-provided arrays (e.g. memmaps) of the image's shape, so memory stays
    bounded; by default they are allocated in memory. Yields :class:`Progress`
    (stages "segment", "label", "measure"); close the generator to cancel.
    """
    from .measure import measure_iter
    from .physical import adapt, given_pixel_size
    from .postprocess import label_stack
    from .predict import check_image, pick_device, predict_stack
    from .quantize import resolve_precision
    from .slices import resolve

    opt = (options or SegmentOptions()).validate()
    check_image(image)
    independent, mode, message = resolve(image, opt.slices, opt.mode)
    device = pick_device(opt.device)
    if model is None:
        net, card = get_model(opt.model, device)
    else:
        net, card = model
    pixel_size = given_pixel_size(opt.pixel_size, pixel_size, image.ndim)
    card, own_context, notes = adapt(card, pixel_size, ndim=image.ndim, z_context=opt.z_context,
                                     image=None if independent else image)
    if model is None and (switched := switch_for_thick_sections(opt, card, own_context, notes, pixel_size,
                                                                image.ndim, device)):
        net, card, notes = switched
    message = "; ".join([m for m in (message, *notes) if m])
    if prob_out is None:
        prob_out = np.zeros(image.shape, np.uint8)
    if labels_out is None:
        labels_out = np.zeros(image.shape, np.uint32)
    tile, overlap = opt.at_model_scale(card)  # after adapt(): the scale for this image's pixel size
    precision = resolve_precision(opt.precision, device)
    if precision == "int8":
        try:
            net = yield from _int8(net, card, image, tile, overlap, opt.batch, device, independent or own_context)
        except Exception as exc:  # noqa: BLE001 - "auto" falls back to fp32 (e.g. a model FX cannot trace)
            if opt.precision != "auto":
                raise
            precision = "fp32"
            message = "; ".join(m for m in (message, f"int8 not possible for this model ({exc}): ran in fp32") if m)
    yield from predict_stack(
        net, card, image, prob_out, tile=tile, overlap=overlap, batch_size=opt.batch,
        device=device, tta=opt.views, independent=independent or own_context, upsample=opt.upsample,
    )
    n = yield from label_stack(
        prob_out, labels_out, threshold=opt.threshold, min_size=opt.min_size, fill_holes=opt.fill_holes,
        mode=mode if image.ndim == 3 else "2d", split=opt.split, median=opt.median,
        z_smooth=opt.smooths_z(mode if image.ndim == 3 else "2d", independent or own_context),
    )
    table = None
    if opt.measure:
        table = yield from measure_iter(labels_out, image, pixel_size)
    used = {**opt.__dict__, "precision": precision, "mode": mode, "independent": independent,
            "own_context": own_context, "scale": card.get("scale")}
    return SegmentResult(labels_out, table, n, card, prob_out, used, message)


def _int8(net, card, image, tile, overlap, batch, device, independent):
    """The network quantized to int8, calibrated on ``image`` (a few seconds)."""
    from .quantize import calibration_iter, quantize

    if device != "cpu":
        raise ValueError(f"precision int8 runs on the CPU only (the device is {device}): use --device cpu")
    calib = yield from calibration_iter(card, image, tile=tile, overlap=overlap, batch=batch, independent=independent)
    return quantize(net, calib)


def segment(image, options: SegmentOptions | None = None, callback=None, **kw) -> SegmentResult:
    """Synchronous :func:`segment_iter` (``callback`` receives each Progress)."""
    return run(segment_iter(image, options, **kw), callback)
