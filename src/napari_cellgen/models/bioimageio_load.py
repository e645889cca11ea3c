"""Run back a bioimage.io package written by ``cellgen export`` (:mod:`.bioimageio`). No Qt.

Only packages napari-cellgen exported are taken (their rdf's config names the cellgen card
inside the zip); anything else is refused in one line, pointing to bioimageio.core. The card
is validated like a model folder's, and the weights are read as a plain state dict of tensors
(``torch.load(weights_only=True)``: no pickle), checked against the rdf's sha256.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from .bioimageio import MARKER, RDF_NAMES, REFUSE, _sha
from .store import ModelError, build_unet


def _open(path: Path) -> tuple[zipfile.ZipFile, dict]:
    """The zip and its rdf, for packages from :func:`export_package` only (one-line ModelError otherwise)."""
    import yaml

    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"{path.name} is not a bioimage.io model package (not a readable zip: {exc})") from exc
    try:
        rdf_name = next((n for n in RDF_NAMES if n in zf.namelist()), None)
        if rdf_name is None:
            raise ModelError(f"{path.name} is not a bioimage.io model package (no rdf.yaml in it); {REFUSE}")
        try:
            rdf = yaml.safe_load(zf.read(rdf_name))
        except yaml.YAMLError as exc:
            raise ModelError(f"{path.name}: its {rdf_name} is not valid YAML") from exc
        rdf = rdf if isinstance(rdf, dict) else {}
        mark = (rdf.get("config") or {}).get(MARKER)
        if rdf.get("type") != "model" or not isinstance(mark, dict) or mark.get("card") not in zf.namelist():
            what = rdf.get("name") or rdf.get("type") or "no model"
            raise ModelError(f"{path.name} ({what}) was not exported by napari-cellgen: {REFUSE}")
    except BaseException:
        zf.close()
        raise
    return zf, rdf


def _read(path) -> tuple[dict, dict, zipfile.ZipFile]:
    from .store import validate_card

    path = Path(path)
    zf, rdf = _open(path)
    try:
        card = json.loads(zf.read(rdf["config"][MARKER]["card"]))
    except ValueError as exc:
        zf.close()
        raise ModelError(f"{path.name}: its cellgen card is not valid JSON") from exc
    if not isinstance(card, dict):
        zf.close()
        raise ModelError(f"{path.name}: its cellgen card is not a JSON object")
    card = validate_card(card, path.name)
    card["path"] = str(path)
    card.setdefault("name", path.stem)
    card["bioimageio"] = {"name": rdf.get("name"), "format_version": rdf.get("format_version")}
    return rdf, card, zf


def read_package_card(path) -> dict:
    """The napari-cellgen card stored in a package written by :func:`export_package`."""
    _, card, zf = _read(path)
    zf.close()
    return card


def load_package(path, device: str = "cpu"):
    """``(model, card)`` from a package written by :func:`export_package`; refuses any other package."""
    import torch

    path = Path(path)
    rdf, card, zf = _read(path)
    with zf:
        descr = (rdf.get("weights") or {}).get("pytorch_state_dict") or {}
        src = descr.get("source")
        if not src or src not in zf.namelist():
            raise ModelError(f"{path.name} has no pytorch_state_dict weights file {src!r}")
        data = zf.read(src)
    if descr.get("sha256") and descr["sha256"] != _sha(data):
        raise ModelError(f"{path.name}: {src} does not match its sha256 in the rdf (damaged?); export it again")
    try:  # no pickle: tensors only
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{path.name}: the weights are not a plain state dict ({type(exc).__name__})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path.name}: the weights are not a plain state dict of tensors")
    return build_unet(card, state, path.name).to(device), card
