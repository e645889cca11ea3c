"""Self-describing model folders: ``model.safetensors`` + ``card.json``.

A model folder can always be rebuilt from the two files alone; nothing is
unpickled.  Bundled models live in the package (``_data/models``), the user's
own in a per-user data folder (``$CELLGEN_USER_DIR`` overrides it).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

CARD = "card.json"
WEIGHTS = "model.safetensors"
DEFAULT_MODEL = "mito-unet"


class ModelError(ValueError):
    """A model folder is missing, incomplete or not a napari-cellgen model."""


def bundled_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "_data" / "models"


def user_dir() -> Path:
    env = os.environ.get("CELLGEN_USER_DIR")
    if env:
        base = Path(env)
    else:
        try:
            from platformdirs import user_data_dir

            base = Path(user_data_dir("napari-cellgen", appauthor=False))
        except ImportError:  # pragma: no cover - platformdirs ships with napari
            base = Path.home() / ".local" / "share" / "napari-cellgen"
    return base / "models"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; use the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_tensors(path: Path, tensors: dict, metadata: dict | None = None) -> str:
    """Save a dict of tensors atomically as safetensors; returns the sha256 of the file."""
    from safetensors.torch import save

    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def load_tensors(path: Path) -> dict:
    from safetensors.torch import load

    try:
        return load(Path(path).read_bytes())
    except Exception as exc:  # safetensors raises several types
        raise ModelError(f"{path} is not a valid safetensors file ({exc}).") from exc


def save_model(folder: str | Path, model, card: dict[str, Any]) -> Path:
    """Write weights and card atomically; the card records the weights' checksum."""
    folder = Path(folder)
    sha = save_tensors(folder / WEIGHTS, model.state_dict())
    card = {**card, "architecture": card.get("architecture", model.config), "weights_sha256": sha}
    atomic_write_bytes(folder / CARD, json.dumps(card, indent=2, default=str).encode())
    return folder


def list_models() -> dict[str, Path]:
    """Names of bundled and user models mapped to their folders (user models win on clashes)."""
    found: dict[str, Path] = {}
    for root in (bundled_dir(), user_dir()):
        if root.is_dir():
            for sub in sorted(root.iterdir()):
                if (sub / CARD).is_file() and (sub / WEIGHTS).is_file():
                    found[sub.name] = sub
    return found


def resolve(name_or_dir: str | os.PathLike | None) -> Path:
    """Find a model folder from a registered name or a path."""
    if name_or_dir in (None, "", "default"):
        name_or_dir = DEFAULT_MODEL
    path = Path(name_or_dir)
    if path.is_dir():
        return path
    if path.suffix == ".safetensors" and path.is_file():
        return path.parent
    models = list_models()
    if str(name_or_dir) in models:
        return models[str(name_or_dir)]
    raise ModelError(
        f"No model called {str(name_or_dir)!r}. Known models: {', '.join(models) or 'none'}; "
        "or give the path of a folder holding model.safetensors and card.json."
    )


def read_card(folder: str | Path) -> dict:
    folder = Path(folder)
    card_path = folder / CARD
    if not card_path.is_file():
        raise ModelError(f"{folder} has no {CARD}: it is not a napari-cellgen model folder.")
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{card_path} is not valid JSON ({exc}).") from exc
    if "architecture" not in card:
        raise ModelError(f"{card_path} does not describe an architecture.")
    return card


def load_model(name_or_dir=None, device: str = "cpu"):
    """Return ``(model, card)`` for a registered name or a model folder, in eval mode."""
    from .unet import UNet

    folder = resolve(name_or_dir)
    card = read_card(folder)
    wpath = folder / WEIGHTS
    if not wpath.is_file():
        raise ModelError(f"{folder} has no {WEIGHTS}.")
    state = load_tensors(wpath)
    try:
        model = UNet(**card["architecture"])
        model.load_state_dict(state)
    except (TypeError, RuntimeError) as exc:
        raise ModelError(f"The weights in {folder} do not match its card ({exc}).") from exc
    model.eval().to(device)
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
    name = name or card.get("name") or src.name
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip(".-") or "model"
    dest = user_dir() / safe
    atomic_write_bytes(dest / WEIGHTS, (src / WEIGHTS).read_bytes())
    card["name"] = safe
    card.pop("path", None)
    atomic_write_bytes(dest / CARD, json.dumps(card, indent=2, default=str).encode())
    return dest
