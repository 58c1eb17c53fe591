"""Training checkpoints: write, find and read the folders a run resumes from.

Layout (DIR/checkpoints/step_NNNNNN/, the newest named by DIR/checkpoints/latest.json):
  model.safetensors      the network in its own weights format (NET_Theta: adacsc.io.weights_file,
                         loadable with load_model, with beta; the black-box U-Net: save_blackbox)
  optimizer.safetensors  Adam's moments and step counts (and NET_Theta's log(beta)), as plain tensors
  state.json             step, elapsed time, schedule, seed, dictionaries, history
Folders are written under a temporary name and renamed, so a crash never leaves a half-written
checkpoint named by latest.json. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from adacsc.training.schedules import Schedule

__all__ = ["CheckpointError", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "write_checkpoint",
           "latest_checkpoint", "read_state", "check_same_run", "read_tensors", "adam_tensors",
           "restore_adam"]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "adacsc-train-checkpoint"
CHECKPOINT_VERSION = 1
_STEP_DIR = re.compile(r"^step_\d{6,}$")

NamedParameters = Sequence[tuple[str, torch.nn.Parameter]]


class CheckpointError(RuntimeError):
    """A checkpoint folder is missing, inconsistent or belongs to another run."""


def adam_tensors(optimizer: torch.optim.Optimizer, parameters: NamedParameters) -> dict[str, torch.Tensor]:
    """Adam's moments and step count of every named parameter that has them, as CPU tensors."""
    tensors: dict[str, torch.Tensor] = {}
    for pname, p in parameters:
        st = optimizer.state.get(p)
        if not st:
            continue
        for key in ("exp_avg", "exp_avg_sq"):
            tensors[f"adam.{pname}.{key}"] = st[key].detach().to("cpu", torch.float32).contiguous().clone()
        tensors[f"adam.{pname}.step"] = torch.as_tensor(st["step"], dtype=torch.float32).reshape(1).cpu().clone()
    return tensors


def restore_adam(optimizer: torch.optim.Optimizer, parameters: NamedParameters, tensors: dict[str, torch.Tensor],
                 device: torch.device) -> None:
    """Replace the optimiser's state with the one `adam_tensors` saved."""
    optimizer.state.clear()
    for pname, p in parameters:
        key = f"adam.{pname}"
        if f"{key}.exp_avg" not in tensors:
            continue
        optimizer.state[p] = {
            "step": tensors[f"{key}.step"].reshape(()).clone(),
            "exp_avg": tensors[f"{key}.exp_avg"].to(device, p.dtype).reshape(p.shape).clone(),
            "exp_avg_sq": tensors[f"{key}.exp_avg_sq"].to(device, p.dtype).reshape(p.shape).clone(),
        }


def write_checkpoint(root: Path, step: int, *, write_model: Callable[[Path], Any], tensors: dict[str, torch.Tensor],
                     state: dict[str, Any], keep: int) -> Path:
    """Write root/step_NNNNNN atomically (the network by `write_model(path of model.safetensors)`),
    point latest.json at it and keep the newest `keep` folders."""
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"step_{step:06d}"
    tmp = root / f".tmp_step_{step:06d}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    write_model(tmp / "model.safetensors")
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps(state, indent=1, allow_nan=True))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    latest_tmp = root / f".latest.{os.getpid()}.json"
    latest_tmp.write_text(json.dumps({"step": step, "folder": folder.name}))
    os.replace(latest_tmp, root / "latest.json")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name))
    for old in folders[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    log.info("checkpoint at step %d: %s", step, folder)
    return folder


def latest_checkpoint(root: Path) -> Path | None:
    """The folder root/latest.json names, or None when there is no checkpoint yet."""
    latest = root / "latest.json"
    if not latest.is_file():
        return None
    try:
        info = json.loads(latest.read_text())
        folder_name = str(info["folder"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"unreadable {latest}: {exc}") from None
    if not _STEP_DIR.match(folder_name):
        raise CheckpointError(f"{latest} names an invalid checkpoint folder {folder_name!r}")
    folder = root / folder_name
    if not folder.is_dir():
        raise CheckpointError(f"{latest} names {folder}, which does not exist")
    return folder


def read_state(folder: Path) -> dict[str, Any]:
    """state.json of a checkpoint, refused unless it has this format and version."""
    try:
        state = json.loads((folder / "state.json").read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {folder / 'state.json'}: {exc}") from None
    if state.get("format") != CHECKPOINT_FORMAT or state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{folder} is not an adacsc training checkpoint of version {CHECKPOINT_VERSION}")
    return state


def check_same_run(folder: Path, state: dict[str, Any], *, schedule: Schedule, seed: int,
                   train_dictionaries: list[str]) -> None:
    """Refuse to resume a checkpoint written with another schedule, seed or training pool."""
    if state.get("schedule") != schedule.to_dict():
        raise CheckpointError(f"{folder} was written by schedule {state.get('schedule', {}).get('name')!r} "
                              f"with other settings; resume with the same schedule or use a new folder")
    if int(state.get("seed", -1)) != seed:
        raise CheckpointError(f"{folder} was trained with seed {state.get('seed')}, not {seed}")
    if state.get("train_dictionaries") != train_dictionaries:
        raise CheckpointError(f"{folder} was trained with dictionaries {state.get('train_dictionaries')}, "
                              f"not {train_dictionaries}")


def read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """optimizer.safetensors of a checkpoint (log(beta) and Adam's state) on the CPU."""
    from safetensors.torch import load_file

    try:
        return load_file(str(folder / "optimizer.safetensors"), device="cpu")
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"cannot read {folder / 'optimizer.safetensors'}: {exc}") from None
