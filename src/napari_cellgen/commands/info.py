"""``cellgen info``: versions, the torch devices available and the models napari-cellgen can use."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from importlib import metadata

PACKAGES = (
    "napari-cellgen",
    "napari",
    "npe2",
    "magicgui",
    "qtpy",
    "numpy",
    "torch",
    "tifffile",
    "scikit-image",
)
QT_BINDINGS = ("PyQt6", "PySide6", "PyQt5", "PySide2")


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "info",
        help="show versions, torch devices and available models and generators",
        description="Show the versions napari-cellgen runs with, the torch devices it can use, "
        "and the bundled and user segmentation models and EM generators.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return p


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def torch_devices() -> list[str]:
    """The torch devices usable here: always "cpu", plus "cuda:N (name)" and "mps"."""
    try:
        import torch
    except ImportError:
        return []
    devices = ["cpu"]
    try:
        if torch.cuda.is_available():
            n = torch.cuda.device_count()
            devices += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(n)]
    except Exception:  # a broken driver must not break `cellgen info`
        pass
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def native_bf16() -> bool | None:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16, AMX): then ``--precision bf16`` trains
    about 2x faster; None without torch."""
    try:
        import torch

        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001 - a private torch call: `cellgen info` must not fail on it
        return None


def collect() -> dict:
    """Everything ``cellgen info`` reports, as plain data."""
    from ..generate.store import bundled_generators_dir, list_generators, user_generators_dir
    from ..models.store import bundled_dir, list_models, user_dir

    bundled = bundled_dir().resolve()
    models = []
    for name, folder in list_models().items():
        kind = "bundled" if folder.resolve().is_relative_to(bundled) else "user"
        models.append({"name": name, "kind": kind, "path": str(folder)})
    bundled_gen = bundled_generators_dir().resolve()
    generators = []
    for name, folder in list_generators().items():
        kind = "bundled" if folder.resolve().is_relative_to(bundled_gen) else "user"
        generators.append({"name": name, "kind": kind, "path": str(folder)})
    return {
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "versions": {name: _version(name) for name in PACKAGES},
        "qt_bindings": {name: v for name in QT_BINDINGS if (v := _version(name))},
        "torch_devices": torch_devices(),
        "cpu_native_bf16": native_bf16(),
        "models": models,
        "model_dirs": {"bundled": str(bundled_dir()), "user": str(user_dir())},
        "generators": generators,
        "generator_dirs": {"bundled": str(bundled_generators_dir()), "user": str(user_generators_dir())},
    }


def run(args) -> int:
    info = collect()
    if getattr(args, "json", False):
        print(json.dumps(info, indent=2))
        return 0
    lines = [f"python          {info['python']}", f"platform        {info['platform']}"]
    for name, v in info["versions"].items():
        lines.append(f"{name:<15} {v or 'not installed'}")
    qt = ", ".join(f"{k} {v}" for k, v in info["qt_bindings"].items())
    lines.append(f"{'Qt binding':<15} {qt or 'none (pip install napari-cellgen[all] for the viewer)'}")
    lines.append(f"{'torch devices':<15} {', '.join(info['torch_devices']) or 'torch not installed'}")
    bf16 = info["cpu_native_bf16"]
    if bf16 is not None:
        lines.append(f"{'CPU bfloat16':<15} " + ("native: `cellgen train --precision bf16` trains about 2x faster"
                                                  if bf16 else "not native: train with --precision fp32 (the default)"))
    for what, key in (("segmentation models", "models"), ("generators", "generators")):
        lines.append(f"{what}:")
        for m in info[key]:
            lines.append(f"  {m['name']:<20} {m['kind']:<8} {m['path']}")
        if not info[key]:
            lines.append("  (none found)")
    lines.append(f"user models folder: {info['model_dirs']['user']}")
    lines.append(f"user generators folder: {info['generator_dirs']['user']}")
    print("\n".join(lines))
    return 0
