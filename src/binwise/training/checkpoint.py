"""Epoch checkpoints: trainable weights, optimiser state, loop state and RNG in one safetensors file.

Files are written atomically and named by global step, so names sort in training order; ``--resume``
continues from the latest one.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import BinwiseError, first_line
from ..fileio import atomic_write

CHECKPOINT_KEY = "binwise_checkpoint"


def checkpoint_name(state: dict) -> str:
    return f"ckpt-{state['global_step']:09d}.safetensors"


def save_checkpoint(folder: Path, module: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> Path:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    for i, param_state in optimizer.state_dict()["state"].items():
        for k, v in param_state.items():
            if torch.is_tensor(v):
                tensors[f"optim.{i}.{k}"] = v.detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    path = folder / checkpoint_name(state)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={CHECKPOINT_KEY: json.dumps(state)}))
    return path


def latest_checkpoint(folder: Path) -> Path | None:
    blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise BinwiseError("a file stands where the run keeps its checkpoints; move it away to resume", blocking)
    files = sorted(folder.glob("ckpt-*.safetensors"))
    return files[-1] if files else None


def load_checkpoint(path: Path, module: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Restore ``module`` (and ``optimizer`` and torch's RNG when given one) from ``path``; returns
    the loop state saved with it."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            state = json.loads(f.metadata()[CHECKPOINT_KEY])
        tensors = load_file(str(path))
        if not isinstance(state, dict):
            raise ValueError("its loop state is not a JSON object")
        module.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    except (SafetensorError, OSError, KeyError, TypeError, ValueError, RuntimeError) as e:
        # RuntimeError: load_state_dict's missing keys or shapes
        raise BinwiseError(f"damaged checkpoint ({first_line(e)[:200]}); "
                           "delete it to resume from the one before", path, kind="damaged_checkpoint") from None
    if optimizer is not None:
        if "rng.torch" not in tensors or tensors["rng.torch"].dtype != torch.uint8:
            raise BinwiseError("damaged checkpoint (it has no random-generator state, which resuming needs to draw "
                               "the same batches); delete it to resume from the one before", path,
                               kind="damaged_checkpoint")
        optim_state = optimizer.state_dict()
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, i, name = key.split(".", 2)
                optim_state["state"].setdefault(int(i), {})[name] = value
        optimizer.load_state_dict(optim_state)
        torch.set_rng_state(tensors["rng.torch"])
    return state


def prune_checkpoints(folder: Path, keep: int, best: str | None) -> None:
    """Delete all but the last ``keep`` checkpoints and the best one."""
    files = sorted(folder.glob("ckpt-*.safetensors"))
    for f in files[:-keep]:
        if f.name != best:
            f.unlink()
