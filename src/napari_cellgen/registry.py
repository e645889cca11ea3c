"""Named, self-describing folders: what the model and the generator registries share.

A registry has a shipped root inside the package and a user root in the per-user data folder
(``$CELLGEN_USER_DIR`` overrides it). Names map to folders; shipped names are reserved, so a
user folder of the same name never hides a shipped entry and nothing registers under one. An
argument names a location (a folder, a file) only when it looks like a path; a bare word is a
name. Cards are JSON objects whose numbers are checked before anything reads them.

Each store (:mod:`.models.store`, :mod:`.generate.store`) keeps its own public functions and
passes its roots on every call, so a test that points a store's root elsewhere moves it here too.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path


def user_data_dir() -> Path:
    """napari-cellgen's per-user data folder (models/, generators/, training-runs/, logs/ ...)."""
    env = os.environ.get("CELLGEN_USER_DIR")
    if env:
        return Path(env)
    try:
        from platformdirs import user_data_dir as platform_dir

        return Path(platform_dir("napari-cellgen", appauthor=False))
    except ImportError:  # pragma: no cover - platformdirs is a dependency
        return Path.home() / ".local" / "share" / "napari-cellgen"


def looks_like_path(arg) -> bool:
    """True when an argument names a location, not a registered name.

    A ``Path`` (from the widgets or the API) or a string with a folder separator (``./mito-unet``,
    ``runs/x``), a leading ``~`` or a ``.safetensors`` / ``.zip`` file name. A bare word is a name:
    a folder in the working directory never replaces a registered entry.
    """
    if isinstance(arg, os.PathLike):
        return True
    text = str(arg)
    seps = [os.sep] + ([os.altsep] if os.altsep else []) + ["/"]
    return any(sep in text for sep in seps) or text.startswith("~") or text.endswith((".safetensors", ".zip"))


def entries(roots: Iterable[Path], is_entry: Callable[[Path], bool]) -> dict[str, Path]:
    """Names mapped to folders, from ``roots`` in order: the first root's entry wins a name."""
    found: dict[str, Path] = {}
    for root in roots:
        if root.is_dir():
            for sub in sorted(root.iterdir()):
                if is_entry(sub):
                    found.setdefault(sub.name, sub)
    return found


def names(root: Path, is_entry: Callable[[Path], bool]) -> set[str]:
    """The entries directly in ``root`` (the shipped ones: reserved names)."""
    return set(entries([root], is_entry))


def resolve(name_or_dir, *, default: str, known: Callable[[], dict[str, Path]],
            as_path: Callable[[Path], Path | None], not_a_path: str, unknown: str, error: type[Exception]) -> Path:
    """The folder an argument names: registered names first; locations only when it looks like a path.

    ``as_path(path)`` returns the entry a path argument stands for, or None (then ``not_a_path``,
    formatted with ``arg``, is raised). A name that is not known raises ``unknown``, formatted with
    ``name``, ``known`` (comma-separated) and ``hint`` (how to use a folder of that name).
    """
    if name_or_dir in (None, "", "default"):
        name_or_dir = default
    path = Path(os.path.expanduser(os.fspath(name_or_dir)))
    if looks_like_path(name_or_dir):
        found = as_path(path)
        if found is None:
            raise error(not_a_path.format(arg=name_or_dir))
        return found
    registered = known()
    if str(name_or_dir) in registered:
        return registered[str(name_or_dir)]
    hint = (f"; to use the folder {name_or_dir} in the current directory give it as a path: "
            f"./{name_or_dir}") if path.is_dir() else ""
    raise error(unknown.format(name=str(name_or_dir), known=", ".join(registered) or "none", hint=hint))


def safe_name(name: str, default: str = "model") -> str:
    """``name`` as a single folder name: letters, digits, ``-_.`` only, no leading dot or dash."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in str(name)).strip(".-") or default


def check_register_name(name: str, reserved: set[str], error: type[Exception], what: str = "model") -> str:
    """The folder name an entry registers under; refuses the names of shipped entries."""
    safe = safe_name(name)
    if safe in reserved:
        raise error(f"{safe!r} is the name of a shipped {what} and is reserved: register under "
                    "another name (--name NAME) or not at all (--no-register).")
    return safe


def read_card(path: Path, error: type[Exception], missing: str | None = None) -> dict:
    """A card file as a dict; ``error`` (with ``missing`` if given, when there is no file) otherwise."""
    try:
        card = json.loads(Path(path).read_text())
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise error(missing or f"{path.parent} has no {path.name}.") from None
    except json.JSONDecodeError as exc:
        raise error(f"{path} is not valid JSON ({exc}).") from exc
    if not isinstance(card, dict):
        raise error(f"{path} is not a JSON object.")
    return card


def check_number(card: dict, key: str, where, error: type[Exception], *, integer: bool = False,
                 lo=None, hi=None, lo_open: bool = False, fix: str = "restore it or retrain the model"):
    """``card[key]`` as a finite number within ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``); raises ``error``.

    Returns it as ``int`` (``integer``) or ``float``.
    """
    value = card[key]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (not integer or float(value) == int(value))
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value <= hi
    if not ok:
        span = f" in {'(' if lo_open else '['}{lo}, {hi}]" if hi is not None else (
            f" {'>' if lo_open else '>='} {lo}" if lo is not None else "")
        raise error(f"{where}: {key} must be a{'n integer' if integer else ' number'}{span}, "
                    f"got {value!r}: the card is damaged; {fix}.")
    return int(value) if integer else float(value)
