"""Checkpoints without pickle: weights and optimizer tensors as safetensors, the rest as JSON.

``last/`` is written as one unit (a temporary sibling folder, fsynced, renamed into place), and
``state.json`` records the sha256 of every file beside it: a crash never leaves a ``last/`` that
mixes two steps, and :func:`load_training_state` refuses one that does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

from ..models.store import ModelError, atomic_write_bytes, load_tensors, save_tensors

STATE = "state.json"


class CheckpointError(ModelError):
    """A ``last/`` checkpoint that cannot be resumed (damaged, mixed or another architecture)."""


def save_training_state(folder: Path, model, optimizer, card: dict, state: dict, ema=None) -> None:
    """Write a resumable checkpoint (model [+ EMA] + optimizer tensors + JSON state) as ``folder``."""
    from .._paths import atomic_dir

    folder = Path(folder)
    opt = optimizer.state_dict()
    tensors, opt_meta = {}, {"param_groups": opt["param_groups"], "state": {}}
    for pid, st in opt["state"].items():
        opt_meta["state"][str(pid)] = {}
        for key, val in st.items():
            if hasattr(val, "shape"):
                tensors[f"{pid}.{key}"] = val
            else:
                opt_meta["state"][str(pid)][key] = val
    with atomic_dir(folder) as tmp:
        files = {"optimizer.safetensors": save_tensors(tmp / "optimizer.safetensors", tensors),
                 "model.safetensors": save_tensors(tmp / "model.safetensors", model.state_dict())}
        if ema is not None:
            files["ema.safetensors"] = save_tensors(tmp / "ema.safetensors", ema.state_dict())
        card = {**card, "architecture": card.get("architecture", model.config),
                "weights_sha256": files["model.safetensors"]}
        card_bytes = json.dumps(card, indent=2, default=str).encode()
        (tmp / "card.json").write_bytes(card_bytes)
        files["card.json"] = hashlib.sha256(card_bytes).hexdigest()
        body = {**state, "optimizer": opt_meta, "files": files}
        (tmp / STATE).write_bytes(json.dumps(body, default=str).encode())


def check_training_state(folder: Path) -> dict:
    """The JSON state of a ``last/`` folder whose files all match it; raises CheckpointError."""
    folder = Path(folder)
    hint = f"delete {folder} and train without --resume, or choose another -o"
    try:
        state = json.loads((folder / STATE).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"nothing to resume: {folder} has no training state") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder / STATE} is damaged ({exc}): {hint}") from exc
    if not isinstance(state, dict) or "step" not in state or "optimizer" not in state:
        raise CheckpointError(f"{folder / STATE} is not a training state: {hint}")
    for name, sha in (state.get("files") or {}).items():
        try:
            data = (folder / name).read_bytes()
        except OSError:
            raise CheckpointError(f"{folder} lacks {name}: the checkpoint is incomplete; {hint}") from None
        if hashlib.sha256(data).hexdigest() != sha:
            raise CheckpointError(f"{folder / name} does not belong to this checkpoint (its checksum differs "
                                  f"from state.json's): {hint}")
    return state


def load_training_state(folder: Path, model, optimizer, ema=None) -> dict:
    """Restore model, optimizer (and EMA) from :func:`save_training_state`; returns the JSON state."""
    import torch

    folder = Path(folder)
    state = check_training_state(folder)
    card_sha = None
    with contextlib.suppress(OSError, ValueError, AttributeError):
        card_sha = json.loads((folder / "card.json").read_text()).get("weights_sha256")
    hint = "train without --resume (or with the same architecture), or choose another -o"
    try:
        model.load_state_dict(load_tensors(folder / "model.safetensors", card_sha))
        if ema is not None and (folder / "ema.safetensors").is_file():
            ema.load_state_dict(load_tensors(folder / "ema.safetensors"))
    except RuntimeError as exc:
        raise CheckpointError(f"{folder} was written by a model of another architecture than this run's: "
                              f"{hint}") from exc
    tensors = load_tensors(folder / "optimizer.safetensors") if (folder / "optimizer.safetensors").exists() else {}
    opt_meta = state.pop("optimizer")
    state.pop("files", None)
    opt_state: dict = {}
    for pid, st in opt_meta["state"].items():
        opt_state[int(pid)] = dict(st)
    for key, val in tensors.items():
        pid, name = key.split(".", 1)
        opt_state.setdefault(int(pid), {})[name] = val
    try:
        optimizer.load_state_dict({"state": opt_state, "param_groups": opt_meta["param_groups"]})
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"the optimizer state in {folder} does not fit this run ({exc}): {hint}") from exc
    if "torch_rng" in state:
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
    return state


def export_last(run_dir: Path, dst: Path, ema: bool = True) -> Path:
    """Write the run's last weights (its EMA, if it kept one) as a model folder in ``dst``.

    The best checkpoint in ``run_dir`` is the one with the highest validation IoU, so its
    score flatters it; the last weights are chosen by nothing but the schedule, and their
    validation IoU (the last one in the history) is an honest estimate.
    """
    run_dir, dst = Path(run_dir), Path(dst)
    last = run_dir / "last"
    if not (last / "state.json").is_file():
        raise FileNotFoundError(f"{run_dir} holds no training state (no last/state.json)")
    state = json.loads((last / "state.json").read_text())
    card = json.loads((last / "card.json").read_text())
    use_ema = ema and (last / "ema.safetensors").is_file()
    tensors = load_tensors(last / ("ema.safetensors" if use_ema else "model.safetensors"))
    history = state.get("history") or [{}]
    card["metrics"] = {
        "val_iou": history[-1].get("val_iou"), "step": state["step"],
        "selection": f"last {'EMA ' if use_ema else ''}weights of the schedule, no checkpoint choice",
    }
    dst.mkdir(parents=True, exist_ok=True)
    sha = save_tensors(dst / "model.safetensors", tensors)
    card["weights_sha256"] = sha
    atomic_write_bytes(dst / "card.json", json.dumps(card, indent=2, default=str).encode())
    return dst
