"""bioimage.io model packages (spec 0.5): export a napari-cellgen model, and run one back. No Qt.

:func:`export_package` writes ``NAME.zip`` holding ``rdf.yaml``, the weights as a pure
PyTorch state dict (``weights.pt``) with the architecture's source (``unet.py``), a
TorchScript copy, test input/output tensors (``.npy``), a cover image, a README and the
model's own card (``cellgen_card.json``). Any bioimage.io consumer (bioimageio.core,
deepImageJ, ilastik ...) reads the rdf; napari-cellgen reads its card and weights back with
:func:`.bioimageio_load.load_package` (no pickle: ``torch.load(weights_only=True)``).

The YAML is written here (no dependency on ``bioimageio.spec``); the tests validate it
with ``bioimageio.spec``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np

from .store import atomic_write_bytes

FORMAT_VERSION = "0.5.4"
RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
MARKER = "napari_cellgen"  # the config key that says "exported by napari-cellgen"
CARD_FILE = "cellgen_card.json"
WEIGHTS_FILE = "weights.pt"
LICENSE = "BSD-3-Clause"
HOMEPAGE = "https://github.com/napari-cellgen/napari-cellgen"
LUCCHI_TEXT = (
    "Lucchi A, Smith K, Achanta R, Knott G, Fua P. Supervoxel-Based Segmentation of Mitochondria in EM "
    "Image Stacks With Learned Shape Features. IEEE Transactions on Medical Imaging 31(2):474-486, 2012 "
    "(training data: EPFL CVLab Electron Microscopy Dataset, mouse CA1 hippocampus FIB-SEM, 5 nm voxels)."
)
LUCCHI_URL = "https://www.epfl.ch/labs/cvlab/data/data-em/"
REFUSE = ("napari-cellgen runs only bioimage.io packages written by `cellgen export` (a 2.5D U-Net with "
          "its cellgen card); run other packages with bioimageio.core")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _tif(arr: np.ndarray) -> bytes:  # sample tensors: image files a person can open
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, arr)
    return buf.getvalue()


def _lucchi_trained(card: dict) -> bool:
    text = json.dumps({k: card.get(k) for k in ("training", "parent", "description")}, default=str).lower()
    return "lucchi" in text or "epfl" in text


def _safe_name(text: str) -> str:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+- ()")
    name = "".join(c if c in allowed else "-" for c in text).strip() or "napari-cellgen model"
    return (name + " (napari-cellgen)" if len(name) < 5 else name)[:64]


# ------------------------------------------------------------------------------ test data
def scale_range(x: np.ndarray, low: float, high: float, eps: float = 1e-6) -> np.ndarray:
    """bioimage.io's ``scale_range`` over (y, x) of each channel: what a consumer applies."""
    lo = np.percentile(x, low, axis=(-2, -1), keepdims=True)
    hi = np.percentile(x, high, axis=(-2, -1), keepdims=True)
    return ((x - lo) / (hi - lo + eps)).astype(np.float32)


def make_test_input(card: dict, size: int = 256) -> np.ndarray:
    """(1, 2k+1, size, size) float32: neighbouring slices of the shipped sample crop at model resolution.

    The window is where the sample's ground truth is closest to a quarter mitochondria, so the
    test output (and the cover) shows both classes.
    """
    from .._sample_data import SAMPLE_IMAGE, SAMPLE_LABELS
    from ..io import read_stack
    from ..segment.preprocess import context_indices, resize, scaled_shape

    stack = np.asarray(read_stack(SAMPLE_IMAGE)[0])
    z = stack.shape[0] // 2
    k = int(card.get("context", 0))
    planes = stack[context_indices(z, stack.shape[0], k)].astype(np.float32)
    small = resize(planes, scaled_shape(planes.shape[-2:], float(card.get("scale", 1.0))), "area")
    divisor = 2 ** int(card["architecture"].get("depth", 0))
    size = max(divisor, min(size, *small.shape[-2:]) // divisor * divisor)
    mask = resize((np.asarray(read_stack(SAMPLE_LABELS)[0])[z] > 0).astype(np.float32), small.shape[-2:], "area")
    ii = np.pad(mask.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    fg = (ii[size:, size:] - ii[:-size, size:] - ii[size:, :-size] + ii[:-size, :-size])[::8, ::8] / size**2
    y0, x0 = (8 * int(i) for i in np.unravel_index(np.argmin(np.abs(fg - 0.25)), fg.shape))
    return np.ascontiguousarray(small[None, :, y0 : y0 + size, x0 : x0 + size], dtype=np.float32)


def _forward(model, x: np.ndarray, card: dict) -> np.ndarray:
    import torch

    norm = card.get("normalization") or {}
    xn = scale_range(x, float(norm.get("low", 1.0)), float(norm.get("high", 99.0)))
    with torch.inference_mode():
        return torch.sigmoid(model(torch.from_numpy(xn))).numpy().astype(np.float32)


def _cover(x: np.ndarray, prob: np.ndarray) -> bytes:
    """A 2:1 PNG: the centre input slice | the same with the probability in magenta."""
    import imageio.v3 as iio

    grey = x[0, x.shape[1] // 2]
    lo, hi = np.percentile(grey, [1, 99])
    g = np.clip((grey - lo) / max(hi - lo, 1e-6), 0, 1)
    p = np.clip(prob[0, 0], 0, 1)
    left = np.stack([g, g, g], -1)
    right = left * (1 - 0.6 * p[..., None]) + 0.6 * p[..., None] * np.array([1.0, 0.0, 1.0])
    img = (np.concatenate([left, right], 1) * 255).round().astype(np.uint8)
    return iio.imwrite("<bytes>", img, extension=".png")


# ------------------------------------------------------------------------------ export
def _readme(card: dict, name: str, px_nm: float | None, in_ch: int) -> str:
    k = int(card.get("context", 0))
    norm = card.get("normalization") or {}
    metrics = card.get("metrics") or {}
    val = metrics.get("val_iou")
    lines = [
        f"# {name}",
        "",
        card.get("description") or "A U-Net predicting the probability that a pixel is mitochondrion.",
        "",
        "Exported by [napari-cellgen](" + HOMEPAGE + ") (`cellgen export`).",
        "",
        "## Input",
        "",
        f"`input` has axes (batch, channel, y, x). The {in_ch} channels are not colours: they are "
        f"{in_ch} consecutive slices of an EM stack, z-{k} ... z+{k}, and the output is the "
        "prediction for the centre slice z (at the ends of a stack, slices are mirrored)."
        if k else "`input` has axes (batch, channel, y, x) with one channel: a single 2D EM slice.",
        "",
        f"The model works at {card.get('scale', 1.0)} x the resolution of its training images"
        + (f" ({px_nm:g} nm per pixel)" if px_nm else "")
        + ": resample your images to that pixel size first (napari-cellgen does this itself). "
        f"Pre-processing (in the rdf): `scale_range` of each channel over (y, x), percentiles "
        f"{norm.get('low', 1.0)} and {norm.get('high', 99.0)}, i.e. each slice is normalised on its own.",
        "",
        "## Output",
        "",
        "`output` (batch, channel, y, x), one channel: the foreground (mitochondrion) probability after a "
        "sigmoid. napari-cellgen thresholds it (0.5), labels connected objects in 3D and removes small ones.",
        "",
        "## Validation",
        "",
    ]
    if metrics.get("cv_iou_mean") is not None:
        lines.append(f"Blocked cross-validation of the training recipe (each fold trained on the other contiguous "
                     f"slice blocks, scored on its own with napari-cellgen's pipeline): foreground IoU "
                     f"{metrics['cv_iou_mean']:.3f} ± {metrics.get('cv_iou_std') or 0:.3f} over "
                     f"{len(metrics.get('cv_folds') or [])} folds. These weights are the same recipe trained on "
                     f"every slice ({metrics.get('selection') or 'see the card'}).")
    elif val is not None:
        how = metrics.get("selection") or "see the card"
        lines.append(f"Foreground IoU on the held-out validation slices, as training measured it (model "
                     f"resolution, threshold 0.5): {val:.3f} ({how}).")
    else:
        lines.append("No validation score is recorded in this model's card.")
    if card.get("results"):  # benchmark results of these weights (by their sha256), in the repository
        lines += ["", "Measurements of these weights (files in the napari-cellgen repository, each naming the "
                  "weights' sha256): " + ", ".join(f"`{r}`" for r in card["results"]) + "."]
    lines += ["", "## Training data", "",
              LUCCHI_TEXT + " " + LUCCHI_URL if _lucchi_trained(card) else f"See `{CARD_FILE}` (training).", "",
              f"`weights.pt` is a pure state dict for `unet.py:UNet`; `{CARD_FILE}` is napari-cellgen's own card.",
              ""]
    return "\n".join(lines)


def _torchscript(model, x: np.ndarray) -> bytes | None:
    import torch

    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, torch.from_numpy(x), check_trace=False)
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
        return buf.getvalue()
    except Exception:  # tracing is a convenience: the state dict is the reference format
        return None


def build_package(model_name_or_dir=None, *, size: int = 256, name: str | None = None) -> dict[str, bytes]:
    """The files of a bioimage.io package for a napari-cellgen model, as ``{name: bytes}``."""
    import torch

    from .store import load_model

    model, card = load_model(model_name_or_dir, "cpu")
    model.eval()
    card = {k: v for k, v in card.items() if k != "path"}
    arch = dict(card["architecture"])
    in_ch, depth = int(arch.get("in_channels", 1)), int(arch.get("depth", 0))
    x = make_test_input(card, size)
    y = _forward(model, x, card)
    px_nm = 5.0 / float(card.get("scale", 1.0)) if _lucchi_trained(card) else None
    title = _safe_name(name or f"{card.get('name', 'model')} mitochondria U-Net ({in_ch} slices)")
    files: dict[str, bytes] = {}
    buf = io.BytesIO()
    torch.save({kk: v.detach().cpu().contiguous() for kk, v in model.state_dict().items()}, buf)
    files[WEIGHTS_FILE] = buf.getvalue()
    files["unet.py"] = (Path(__file__).parent / "unet.py").read_bytes()
    ts = _torchscript(model, x)
    if ts is not None:
        files["weights.torchscript.pt"] = ts
    files["test_input.npy"], files["test_output.npy"] = _npy(x), _npy(y)
    files["sample_input.tif"], files["sample_output.tif"] = _tif(x[0]), _tif(y[0])
    files["cover.png"] = _cover(x, y)
    files["README.md"] = _readme(card, title, px_nm, in_ch).encode()
    files[CARD_FILE] = json.dumps(card, indent=2, default=str).encode()
    files["rdf.yaml"] = _rdf(card, files, title=title, in_ch=in_ch, depth=depth, px_nm=px_nm).encode()
    return files


def _rdf(card, files, *, title, in_ch, depth, px_nm) -> str:
    import torch
    import yaml

    from .. import __version__

    def f(path: str) -> dict:
        return {"source": path, "sha256": _sha(files[path])}

    k = int(card.get("context", 0))
    norm = card.get("normalization") or {}
    divisor = 2**depth
    halo = int(card.get("overlap", 32)) // 2
    step = divisor
    min_size = max(divisor, -(-(2 * halo + divisor) // divisor) * divisor)
    space = {"type": "space", **({"unit": "nanometer", "scale": float(px_nm)} if px_nm else {})}
    names = [f"z{i - k:+d}" if i != k else "z" for i in range(in_ch)]
    ch_desc = (f"{in_ch} neighbouring EM slices z-{k}..z+{k} (2.5D context); output is for slice z"
               if k else "one EM slice")
    cites = []
    if _lucchi_trained(card):
        cites.append({"text": LUCCHI_TEXT, "url": LUCCHI_URL})
    cites.append({"text": "napari-cellgen: mitochondria segmentation and EM generation for napari",
                  "url": HOMEPAGE})
    torch_version = torch.__version__.split("+")[0]
    rdf = {
        "type": "model",
        "format_version": FORMAT_VERSION,
        "name": title,
        "description": (card.get("description") or "2.5D U-Net for mitochondria in EM")[:1024],
        "authors": [{"name": "napari-cellgen developers"}],
        "cite": cites,
        "license": LICENSE,
        "documentation": "README.md",
        "covers": ["cover.png"],
        "tags": ["electron-microscopy", "fib-sem", "mitochondria", "semantic-segmentation", "unet",
                 "2.5d", "pytorch", "napari-cellgen"],
        "version": str(card.get("version", "1")),
        "attachments": [f(CARD_FILE)],
        "inputs": [{
            "id": "input",
            "description": ch_desc[:128],
            "axes": [
                {"type": "batch"},
                {"type": "channel", "channel_names": names, "description": ch_desc[:128]},
                {"id": "y", **space, "size": {"min": min_size, "step": step}},
                {"id": "x", **space, "size": {"min": min_size, "step": step}},
            ],
            "test_tensor": f("test_input.npy"),
            "sample_tensor": f("sample_input.tif"),
            "data": {"type": "float32"},
            "preprocessing": [
                {"id": "scale_range", "kwargs": {"axes": ["y", "x"], "min_percentile": float(norm.get("low", 1.0)),
                                                 "max_percentile": float(norm.get("high", 99.0)), "eps": 1e-6}},
            ],
        }],
        "outputs": [{
            "id": "output",
            "description": "mitochondrion (foreground) probability of the centre slice",
            "axes": [
                {"type": "batch"},
                {"type": "channel", "channel_names": ["mitochondria"]},
                {"id": "y", **space, "size": {"tensor_id": "input", "axis_id": "y"}, "halo": halo},
                {"id": "x", **space, "size": {"tensor_id": "input", "axis_id": "x"}, "halo": halo},
            ],
            "test_tensor": f("test_output.npy"),
            "sample_tensor": f("sample_output.tif"),
            "data": {"type": "float32", "range": [0.0, 1.0]},
            "postprocessing": [{"id": "sigmoid"}],
        }],
        "weights": {
            "pytorch_state_dict": {
                **f(WEIGHTS_FILE),
                "architecture": {**f("unet.py"), "callable": "UNet", "kwargs": dict(card["architecture"])},
                "pytorch_version": torch_version,
            },
        },
        "config": {
            "bioimageio": {"architecture_type": "2.5D U-Net", "modality": "electron microscopy (FIB-SEM)",
                           "target_structure": ["mitochondria"]},
            MARKER: {"version": __version__, "card": CARD_FILE, "context": k,
                     "scale": float(card.get("scale", 1.0))},
        },
    }
    if "weights.torchscript.pt" in files:
        rdf["weights"]["torchscript"] = {**f("weights.torchscript.pt"), "pytorch_version": torch_version,
                                         "parent": "pytorch_state_dict"}
    return yaml.safe_dump(rdf, sort_keys=False, allow_unicode=True)


def export_package(model_name_or_dir, out: str | os.PathLike, *, size: int = 256,
                   name: str | None = None) -> Path:
    """Write the bioimage.io package of a model to ``out`` (a .zip), atomically; returns the path."""
    out = Path(out)
    if out.suffix.lower() != ".zip":
        raise ValueError(f"{out.name}: a bioimage.io package is a .zip file; give e.g. {out.stem}.zip")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"the output folder {out.parent} does not exist")
    files = build_package(model_name_or_dir, size=size, name=name)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for fname in ["rdf.yaml", *sorted(set(files) - {"rdf.yaml"})]:
            zf.writestr(fname, files[fname])
    atomic_write_bytes(out, buf.getvalue())
    return out
