"""Self-describing model folders: ``model.safetensors`` + ``card.json``.

A model folder can always be rebuilt from the two files alone; nothing is
unpickled.  Bundled models live in the package (``_data/models``), the user's
own in a per-user data folder (``$CELLGEN_USER_DIR`` overrides it).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from .. import registry
from ..registry import looks_like_path, safe_name  # noqa: F401  (part of this module's interface)

CARD = "card.json"
WEIGHTS = "model.safetensors"
DEFAULT_MODEL = "mito-unet"
# the model left to the plugin: DEFAULT_MODEL, or THICK_SECTIONS_MODEL for thick sections (ssTEM), which
# come from another microscope or protocol (segment/pipeline.py:auto_model; docs/benchmarks.md)
AUTO_MODELS = (None, "", "default", "auto")
THICK_SECTIONS_MODEL = "mito-unet-travel"


class ModelError(ValueError):
    """A model folder is missing, incomplete or not a napari-cellgen model."""


def bundled_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "_data" / "models"


def user_dir() -> Path:
    return registry.user_data_dir() / "models"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half (fsynced)."""
    from .._paths import atomic_write_bytes as write

    write(path, data)


def save_tensors(path: Path, tensors: dict, metadata: dict | None = None) -> str:
    """Save a dict of tensors atomically as safetensors; returns the sha256 of the file."""
    from safetensors.torch import save

    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def load_tensors(path: Path, sha256: str | None = None) -> dict:
    """The tensors of a safetensors file; with ``sha256``, refuse a file whose checksum differs."""
    from safetensors.torch import load

    data = Path(path).read_bytes()
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise ModelError(f"{path} does not match the weights_sha256 of its card: the file was changed or "
                         "damaged; copy the model again.")
    try:
        return load(data)
    except Exception as exc:  # safetensors raises several types
        raise ModelError(f"{path} is not a valid safetensors file ({exc}).") from exc


def save_model(folder: str | Path, model, card: dict[str, Any]) -> Path:
    """Write weights and card atomically; the card records the weights' checksum."""
    folder = Path(folder)
    sha = save_tensors(folder / WEIGHTS, model.state_dict())
    card = {**card, "architecture": card.get("architecture", model.config), "weights_sha256": sha}
    atomic_write_bytes(folder / CARD, json.dumps(card, indent=2, default=str).encode())
    return folder


def _is_model(folder: Path) -> bool:
    return (folder / CARD).is_file() and (folder / WEIGHTS).is_file()


def shipped_models() -> set[str]:
    return registry.names(bundled_dir(), lambda p: (p / CARD).is_file())


def list_models() -> dict[str, Path]:
    """Names of bundled and user models mapped to their folders.

    Shipped names are reserved: a user folder with a shipped model's name (which
    :func:`register_model` refuses to write) never hides the shipped model.
    """
    return registry.entries((bundled_dir(), user_dir()), _is_model)


def _model_at(path: Path) -> Path | None:
    if path.is_dir():
        return path
    if path.suffix == ".safetensors" and path.is_file():
        return path.parent
    if path.suffix.lower() == ".zip" and path.is_file():  # a bioimage.io package (see bioimageio.py)
        return path
    return None


def resolve(name_or_dir: str | os.PathLike | None) -> Path:
    """Find a model folder: registered names first; folders only when the argument is a path."""
    return registry.resolve(
        None if name_or_dir in AUTO_MODELS else name_or_dir, default=DEFAULT_MODEL, known=list_models,
        as_path=_model_at, error=ModelError,
        not_a_path=f"{{arg}} is not a model folder (one holding {WEIGHTS} and {CARD}) "
                   "or a bioimage.io package (.zip) written by `cellgen export`.",
        unknown=f"No model called {{name!r}}. Known models: {{known}}; "
                f"or give the path of a folder holding {WEIGHTS} and {CARD}{{hint}}.",
    )


def _number(card: dict, key: str, where, kind=float, lo=None, hi=None, lo_open=False):
    return registry.check_number(card, key, where, ModelError, integer=kind is int, lo=lo, hi=hi, lo_open=lo_open)


def validate_card(card: dict, where="card.json") -> dict:
    """Check every field inference and training read from a segmentation card; raise ModelError."""
    arch = card.get("architecture")
    if not isinstance(arch, dict):
        raise ModelError(f"{where} does not describe an architecture.")
    for key, lo, hi in (("in_channels", 1, 64), ("out_channels", 1, 64), ("base", 1, 1024), ("depth", 1, 8)):
        if key not in arch:
            raise ModelError(f"{where}: the architecture lacks {key}: the card is damaged.")
        _number(arch, key, where, int, lo, hi)
    depth = int(arch["depth"])
    if "context" in card:
        context = _number(card, "context", where, int, 0, 16)
        if 2 * context + 1 != int(arch["in_channels"]):
            raise ModelError(f"{where}: context {context} needs {2 * context + 1} input channels but the "
                             f"architecture has {arch['in_channels']}: the card does not match its weights.")
    if "scale" in card:
        _number(card, "scale", where, float, 0, 1, lo_open=True)
    if "tile" in card:
        tile = _number(card, "tile", where, int, 1, 1 << 16)
        if tile % 2**depth:
            raise ModelError(f"{where}: tile {tile} must be a multiple of {2**depth} (2**depth).")
        if "overlap" in card:
            _number(card, "overlap", where, int, 0, tile - 1)
    elif "overlap" in card:
        _number(card, "overlap", where, int, 0, None)
    norm = card.get("normalization", {})
    if not isinstance(norm, dict):
        raise ModelError(f"{where}: normalization must be an object with low and high percentiles.")
    low, high = norm.get("low", 1.0), norm.get("high", 99.0)
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (low, high)) or not 0 <= low < high <= 100:
        raise ModelError(f"{where}: normalization percentiles must satisfy 0 <= low < high <= 100, "
                         f"got {low!r}, {high!r}.")
    return card


def read_card(folder: str | Path) -> dict:
    folder = Path(folder)
    if folder.is_file():  # a bioimage.io package from `cellgen export`
        from .bioimageio_load import read_package_card

        return validate_card(read_package_card(folder), folder.name)
    card_path = folder / CARD
    missing = f"{folder} has no {CARD}: it is not a napari-cellgen model folder."
    card = registry.read_card(card_path, ModelError, missing)
    return validate_card(card, card_path)


def build_unet(card: dict, state: dict, where):
    """The U-Net of ``card["architecture"]`` holding the tensors ``state`` (eval mode); ModelError if they differ."""
    from .unet import UNet

    try:
        model = UNet(**card["architecture"])
        model.load_state_dict(state)
    except (TypeError, RuntimeError, ValueError) as exc:
        msg = " ".join(str(exc).split())[:200]
        raise ModelError(f"{where}: the weights do not match its card ({msg}).") from exc
    return model.eval()


def load_model(name_or_dir=None, device: str = "cpu"):
    """Return ``(model, card)`` for a registered name or a model folder, in eval mode."""
    folder = resolve(name_or_dir)
    if folder.is_file():  # a bioimage.io package from `cellgen export`
        from .bioimageio_load import load_package

        return load_package(folder, device)
    card = read_card(folder)
    wpath = folder / WEIGHTS
    if not wpath.is_file():
        raise ModelError(f"{folder} has no {WEIGHTS}.")
    model = build_unet(card, load_tensors(wpath, card.get("weights_sha256")), folder)
    model.to(device)
    card["path"] = str(folder)
    card.setdefault("name", folder.name)
    return model, card


def register_model(folder: str | Path, name: str | None = None) -> Path:
    """Copy a trained model folder (weights + card only) into the user models folder.

    Returns the registered folder; it then appears in :func:`list_models`, the Segment
    widget's model list and ``cellgen segment --model NAME``.
    """
    src = Path(folder)
    card = read_card(src)
    safe = check_register_name(name or card.get("name") or src.name)
    dest = user_dir() / safe
    atomic_write_bytes(dest / WEIGHTS, (src / WEIGHTS).read_bytes())
    card["name"] = safe
    card.pop("path", None)
    atomic_write_bytes(dest / CARD, json.dumps(card, indent=2, default=str).encode())
    return dest


def check_register_name(name: str, reserved: set[str] | None = None) -> str:
    """The folder name a model registers under; refuses the names of shipped models."""
    return registry.check_register_name(name, shipped_models() if reserved is None else reserved, ModelError)
