"""Generator folders: ``vae/`` and ``denoiser/`` (safetensors + card.json each) and ``layout.json``.

::

    GEN_DIR/
      vae/model.safetensors, vae/card.json         ConvVAE; card: architecture, normalisation,
                                                   latent shift/scale, training, metrics, date
      denoiser/model.safetensors, denoiser/card.json   MaskDenoiser (EMA weights); card: architecture,
                                                   noise schedule, conditioning, mask slices, metrics
      layout.json                                  fitted mask-layout statistics (see layout.py)
      acquisition.json                             optional: the user's microscope (see acquire.py):
                                                   generated tiles are rendered through it

Everything loads offline from the files alone; nothing is unpickled. Bundled generators live in
``napari_cellgen/_data/generators/<name>``, the user's in the per-user data folder.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import registry
from ..models.store import CARD, WEIGHTS, ModelError, atomic_write_bytes, load_tensors, save_model

DEFAULT_GENERATOR = "mito-gen"
LAYOUT = "layout.json"
ACQUISITION = "acquisition.json"
ACQUISITION_KEYS = ("scale", "blur_sigma", "noise_sigma", "tone")
PARTS = ("vae", "denoiser")


class GeneratorError(ModelError):
    """A generator folder is missing, incomplete or does not match its cards (a ValueError)."""


def bundled_generators_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "_data" / "generators"


def user_generators_dir() -> Path:
    return registry.user_data_dir() / "generators"


def is_generator(folder: str | os.PathLike) -> bool:
    f = Path(folder)
    return all((f / p / CARD).is_file() and (f / p / WEIGHTS).is_file() for p in PARTS) and (f / LAYOUT).is_file()


def shipped_generators() -> set[str]:
    return registry.names(bundled_generators_dir(), is_generator)


def list_generators() -> dict[str, Path]:
    """Names of bundled and user generators mapped to their folders (shipped names are reserved)."""
    return registry.entries((bundled_generators_dir(), user_generators_dir()), is_generator)


def resolve_generator(name_or_dir: str | os.PathLike | None = None) -> Path:
    """A generator folder: registered names first; folders only when the argument is a path."""
    return registry.resolve(
        name_or_dir, default=DEFAULT_GENERATOR, known=list_generators, error=GeneratorError,
        as_path=lambda path: path if path.is_dir() else None,
        not_a_path=f"{{arg}} is not a folder: a generator is a folder with vae/, denoiser/ "
                   f"and {LAYOUT} (as written by `cellgen train-generator -o GEN_DIR`).",
        unknown="No generator called {name!r}. Known generators: {known}; "
                "train one with `cellgen train-generator` or give the path of a generator folder{hint}.",
    )


def _check_number(card: dict, key: str, where, lo=None, positive=False, integer=False) -> None:
    if key in card:
        registry.check_number(card, key, where, GeneratorError, integer=integer, lo=0 if positive else lo,
                              lo_open=positive, fix="restore it or train the generator again")


def validate_generator_cards(vcard: dict, dcard: dict, divisor: int, where: Path) -> None:
    """Check the card fields sampling reads (tile, scale, latent statistics, noise)."""
    vpath, dpath = where / "vae" / CARD, where / "denoiser" / CARD
    for key in ("latent_scale",):
        _check_number(vcard, key, vpath, positive=True)
    _check_number(vcard, "latent_shift", vpath)
    _check_number(vcard, "noise_std", vpath, lo=0)
    if "grey_range" in vcard:
        g = vcard["grey_range"]
        ok = isinstance(g, list | tuple) and len(g) == 2 and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in g)
        if not ok or not 0 <= g[0] < g[1] <= 255:
            raise GeneratorError(f"{vpath}: grey_range must be two grey levels 0 <= low < high <= 255, got {g!r}; "
                                 "restore it or train the generator again.")
    for card, path in ((vcard, vpath), (dcard, dpath)):
        _check_number(card, "tile", path, positive=True, integer=True)
        _check_number(card, "scale", path, positive=True)
        if "scale" in card and card["scale"] > 1:
            raise GeneratorError(f"{path}: scale must be in (0, 1], got {card['scale']!r}.")
    tile = int(dcard.get("tile", 256))
    if tile % divisor:
        raise GeneratorError(f"{dpath}: tile {tile} must be a multiple of {divisor} (the generator's divisor).")


@dataclass
class LatentGenerator:
    """A loaded generator: VAE, denoiser (EMA weights), their cards and the layout statistics."""

    vae: object
    denoiser: object
    vae_card: dict
    denoiser_card: dict
    layout: dict = field(default_factory=dict)
    path: Path | None = None
    acquisition: dict | None = None  # the fitted microscope (acquire.py), None: images as the VAE decodes them

    @property
    def name(self) -> str:
        return self.denoiser_card.get("name") or (self.path.name if self.path else "generator")

    @property
    def factor(self) -> int:
        return self.vae.divisor

    @property
    def divisor(self) -> int:
        """Image sides must be multiples of this."""
        return self.vae.divisor * self.denoiser.divisor

    @property
    def tile(self) -> int:
        return int(self.denoiser_card.get("tile", 256))


def save_part(folder: str | Path, model, card: dict) -> Path:
    """Write ``model.safetensors`` + ``card.json`` (weights checksum included) atomically."""
    return save_model(Path(folder), model, card)


def save_layout(gen_dir: str | Path, layout: dict) -> None:
    atomic_write_bytes(Path(gen_dir) / LAYOUT, json.dumps(layout, indent=1).encode())


def _read_json(path: Path, what: str) -> dict:
    return registry.read_card(path, GeneratorError, f"{path.parent} has no {path.name}: the generator is "
                              f"incomplete ({what}).")


def _load_part(folder: Path, part: str, cls):
    sub = folder / part
    if not sub.is_dir():
        raise GeneratorError(
            f"{folder} has no {part}/ folder: it is not a complete generator (training may have been "
            "stopped before this part was written)."
        )
    card = _read_json(sub / CARD, f"{part} card")
    if not isinstance(card.get("architecture"), dict):
        raise GeneratorError(f"{sub / CARD} does not describe an architecture.")
    if not (sub / WEIGHTS).is_file():
        raise GeneratorError(f"{sub} has no {WEIGHTS}: the generator is incomplete.")
    try:
        state = load_tensors(sub / WEIGHTS, card.get("weights_sha256"))
    except ModelError as exc:
        raise GeneratorError(str(exc)) from exc
    try:
        model = cls(**card["architecture"])
        model.load_state_dict(state)  # float16 (exported) weights are cast to the model's float32
    except (TypeError, RuntimeError, ValueError, KeyError, AssertionError) as exc:
        msg = " ".join(str(exc).split())[:200]
        raise GeneratorError(f"The weights in {sub} do not match its card ({msg}).") from exc
    return model.eval(), card


def load_generator(name_or_dir=None, device: str = "cpu") -> LatentGenerator:
    """Load a generator folder (or registered name); raises :class:`GeneratorError` if incomplete."""
    from ..models.denoiser import MaskDenoiser
    from ..models.vae import ConvVAE

    folder = resolve_generator(name_or_dir)
    vae, vcard = _load_part(folder, "vae", ConvVAE)
    den, dcard = _load_part(folder, "denoiser", MaskDenoiser)
    if "latent_scale" not in vcard:
        raise GeneratorError(f"{folder / 'vae' / CARD} lacks latent_scale: the VAE was not finished.")
    if den.config["latent_channels"] != vae.config["latent_channels"] or den.config["factor"] != vae.divisor:
        raise GeneratorError(f"{folder}: the denoiser does not fit the VAE (latent channels or factor differ).")
    validate_generator_cards(vcard, dcard, vae.divisor * den.divisor, folder)
    layout = _read_json(folder / LAYOUT, "mask layout statistics")  # a JSON object, or GeneratorError
    acq = None
    if (folder / ACQUISITION).is_file():
        acq = _read_json(folder / ACQUISITION, "acquisition model")
        bad = [k for k in ACQUISITION_KEYS if k not in acq]
        tone = acq.get("tone")
        if bad or not (isinstance(tone, list) and len(tone) == 2 and len(tone[0]) == len(tone[1]) > 1) or not (
            isinstance(acq["scale"], (int, float)) and 0.01 <= acq["scale"] <= 100
        ):
            raise GeneratorError(f"{folder / ACQUISITION} is not a valid acquisition model "
                                 f"(needs {', '.join(ACQUISITION_KEYS)}; scale 0.01-100): delete it or refit it")
    return LatentGenerator(vae.to(device), den.to(device), vcard, dcard, layout, folder, acq)


def register_generator(folder: str | Path, name: str | None = None) -> Path:
    """Copy a generator folder (cards, weights, layout) into the user generators folder."""
    src = Path(folder)
    if not is_generator(src):
        raise GeneratorError(f"{src} is not a complete generator (needs vae/, denoiser/ and {LAYOUT}).")
    safe = registry.check_register_name(name or src.name, shipped_generators(), GeneratorError, "generator")
    dest = user_generators_dir() / safe
    for part in PARTS:
        for fname in (WEIGHTS, CARD):
            atomic_write_bytes(dest / part / fname, (src / part / fname).read_bytes())
    atomic_write_bytes(dest / LAYOUT, (src / LAYOUT).read_bytes())
    if (src / ACQUISITION).is_file():
        atomic_write_bytes(dest / ACQUISITION, (src / ACQUISITION).read_bytes())
    return dest


def state_dict_tensors(path: Path) -> dict:
    """The tensors of a safetensors file (no pickle): for tests and tools."""
    return load_tensors(path)


def export_generator(src: str | Path, dest: str | Path, half: bool = False) -> dict:
    """Copy a trained generator to ``dest`` (e.g. the bundled folder), optionally as float16 weights.

    float16 halves the size; :func:`load_generator` casts back to float32. Returns the sizes in bytes.
    """
    from ..models.store import save_tensors

    src, dest = Path(src), Path(dest)
    gen = load_generator(src)  # refuses incomplete folders
    sizes = {}
    for part, model, card in (("vae", gen.vae, gen.vae_card), ("denoiser", gen.denoiser, gen.denoiser_card)):
        state = model.state_dict()
        if half:
            state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        sha = save_tensors(dest / part / WEIGHTS, state)
        card = {**card, "weights_sha256": sha, "weights_dtype": "float16" if half else "float32"}
        card.pop("path", None)
        atomic_write_bytes(dest / part / CARD, json.dumps(card, indent=2, default=str).encode())
        sizes[part] = (dest / part / WEIGHTS).stat().st_size
    atomic_write_bytes(dest / LAYOUT, (src / LAYOUT).read_bytes())
    if (src / ACQUISITION).is_file():
        atomic_write_bytes(dest / ACQUISITION, (src / ACQUISITION).read_bytes())
    sizes["total"] = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    return sizes
