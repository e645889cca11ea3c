"""Checkpoints without pickle: weights and optimizer tensors as safetensors, the rest as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from ..models.store import atomic_write_bytes, load_tensors, save_model, save_tensors


def save_training_state(folder: Path, model, optimizer, card: dict, state: dict) -> None:
    """Write a resumable checkpoint (model + optimizer tensors + JSON state) into ``folder``."""
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
    save_tensors(folder / "optimizer.safetensors", tensors)
    save_model(folder, model, card)
    atomic_write_bytes(folder / "state.json", json.dumps({**state, "optimizer": opt_meta}, default=str).encode())


def load_training_state(folder: Path, model, optimizer) -> dict:
    """Restore model and optimizer from :func:`save_training_state`; returns the JSON state."""
    import torch

    folder = Path(folder)
    model.load_state_dict(load_tensors(folder / "model.safetensors"))
    state = json.loads((folder / "state.json").read_text())
    tensors = load_tensors(folder / "optimizer.safetensors") if (folder / "optimizer.safetensors").exists() else {}
    opt_meta = state.pop("optimizer")
    opt_state: dict = {}
    for pid, st in opt_meta["state"].items():
        opt_state[int(pid)] = dict(st)
    for key, val in tensors.items():
        pid, name = key.split(".", 1)
        opt_state.setdefault(int(pid), {})[name] = val
    optimizer.load_state_dict({"state": opt_state, "param_groups": opt_meta["param_groups"]})
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
