"""What every benchmark result carries, and how it is written.

A result names the weights it measured by their card name and the sha256 of the weights file (a
name alone, "mito-unet", names every version ever shipped), records the exact command and the
date, and is written atomically (a temporary file renamed over the old one), so that a run that
dies halfway never leaves half a JSON.

Used by every script in ``benchmarks/`` (run as scripts, so this folder is on ``sys.path``)::

    from _provenance import model_ref, stamp, write_json
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shlex
import sys
from pathlib import Path


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_ref(name_or_dir) -> dict:
    """A segmenter as a result names it: card name and version, weights' sha256, what was asked for.

    ``label`` (``name@sha12``) is the short form for tables. A bioimage.io package (``.zip``) is
    named by the sha256 of the package file.
    """
    from napari_cellgen.models.store import WEIGHTS, read_card, resolve

    folder = resolve(name_or_dir)
    card = read_card(folder)
    weights = folder if folder.is_file() else folder / WEIGHTS
    sha = file_sha256(weights)
    name = card.get("name") or folder.stem
    ref = {"name": name, "version": card.get("version"), "weights_sha256": sha,
           "label": f"{name}@{sha[:12]}", "given": str(name_or_dir or "default")}
    if folder.is_file():
        ref["weights_file"] = "bioimage.io package (sha256 of the .zip)"
    return ref


def trained_lucchi_slices(name_or_dir) -> set[int]:
    """The Lucchi training-volume slices a segmenter's card says it trained on (empty if none named)."""
    from napari_cellgen.models.store import read_card, resolve
    from napari_cellgen.train.data import parse_slices

    training = read_card(resolve(name_or_dir)).get("training") or {}
    spans = training.get("train_slices_list")
    if not spans or spans == "none" or "lucchi" not in str(training.get("data", "")).lower():
        return set()
    return set(parse_slices(str(spans), 165))


def seen_lucchi_slices(name_or_dir, slices) -> set[int]:
    """Which of the Lucchi ``slices`` a segmenter trained on (empty: a score on them is an estimate)."""
    return trained_lucchi_slices(name_or_dir) & {int(z) for z in slices}


def check_unseen(name_or_dir, slices, what: str = "evaluates on") -> None:
    """Stop a benchmark whose model trained on the Lucchi slices it scores (a number that is no estimate).

    The shipped ``mito-unet`` v4 trained on all 165 slices: benchmarks that score held-out Lucchi
    blocks take a model that never saw them, e.g. a CV fold's (``runs/cv/<recipe>/fold4/last``
    never saw 130-164).
    """
    seen = seen_lucchi_slices(name_or_dir, slices)
    if seen:
        zs = sorted(seen)
        raise SystemExit(f"{name_or_dir}: its card says it trained on Lucchi slices {zs[0]}-{zs[-1]} "
                         f"({len(zs)} of them), which this benchmark {what}; pass --model with a model that "
                         "never saw them, e.g. a cross-validation fold's: runs/cv/scratch8k_bf16/fold4/last "
                         "(trained on 0-129; python benchmarks/cv.py)")


def generator_ref(name_or_dir) -> dict:
    """A generator as a result names it: card name, sha256 of the VAE's and the denoiser's weights."""
    from napari_cellgen.generate.store import CARD, PARTS, WEIGHTS, resolve_generator

    folder = resolve_generator(name_or_dir)
    shas = {f"{part}_weights_sha256": file_sha256(folder / part / WEIGHTS) for part in PARTS}
    card = json.loads((folder / "denoiser" / CARD).read_text())
    name = card.get("name") or folder.name
    return {"name": name, **shas, "label": f"{name}@{shas['denoiser_weights_sha256'][:12]}",
            "given": str(name_or_dir or "default")}


def machine() -> dict:
    """CPU count, torch threads and versions, as a result records the machine it ran on."""
    import platform

    import torch

    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__}


def command(argv: list[str] | None = None) -> str:
    """The command line that ran this script (``argv``: the arguments ``main`` parsed, if not sys.argv's)."""
    script = Path(sys.argv[0])
    with contextlib.suppress(ValueError):  # a script outside the working directory keeps its path
        script = script.resolve().relative_to(Path.cwd())
    args = sys.argv[1:] if argv is None else list(argv)
    return "python " + shlex.join([script.as_posix(), *map(str, args)])


def stamp(argv: list[str] | None = None) -> dict:
    """``command`` and ``date`` (UTC, ISO 8601 to the second) for a result."""
    return {"command": command(argv), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def write_json(path: str | os.PathLike, obj, **dumps) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (temporary file in the same folder, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(obj, **{"indent": 2, **dumps}) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def new_path(path: str | os.PathLike) -> Path:
    """``path`` with the run's UTC time before the suffix (``segment_speed_20261203T101500Z.json``):
    every run its own file, none merged into an older one."""
    path = Path(path)
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return path.with_name(f"{path.stem}_{when}{path.suffix}")
