"""The checkpoint's model as a function of arrays (`ModelFn`): loaded from a checkpoint on a
device, optionally averaged over its 8 test-time views (the rotations and flips).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .streaming import ModelFn

if TYPE_CHECKING:
    import torch

    from .config import PredictConfig


def checkpoint_model_fn(checkpoint: Path, cfg: PredictConfig, local_rank: int) -> ModelFn:
    """The checkpoint's model as ModelFn on the device `cfg` names (under torchrun: the
    process's own GPU), with its autocast and test-time views."""
    from training.runtime import amp_dtype_for, resolve_device

    device = resolve_device(cfg.device, local_rank)  # under torchrun: its own GPU
    model, _ = load_model(checkpoint, device)
    return torch_model_fn(model, device, amp_dtype_for(device, cfg.amp), cfg.tta)


def load_model(checkpoint: Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """The checkpoint's model on `device`, ready for inference, and its meta."""
    from training.models import build_model
    from training.runtime import load_checkpoint, prepared

    ck = load_checkpoint(checkpoint, map_location="cpu")
    meta = ck["meta"]
    model = build_model(meta["model"], meta["preset"], len(meta["band_names"]))
    model.load_state_dict(ck["model_state"])
    return prepared(model, device).eval(), meta


def torch_model_fn(model: torch.nn.Module, device: torch.device, amp_dtype: torch.dtype | None,
                   tta: bool = False) -> ModelFn:
    """The model as ModelFn; with `tta`, the mean and the spread (standard deviation) of its
    probabilities over the 8 rotations and flips, each mapped back before averaging."""
    import torch

    from training.runtime import forward

    def prob(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(forward(model, x, amp_dtype).float(), 1)[:, 1]

    @torch.no_grad()
    def fn(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(x)).to(device)
        if not tta:
            return prob(t).cpu().numpy()
        views = torch.stack([undo_dihedral(prob(dihedral_view(t, k)), k) for k in range(8)])
        return torch.stack([views.mean(0), views.std(0, unbiased=False)], 1).cpu().numpy()

    return fn


def dihedral_view(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 rotations and flips of a (..., h, w) tensor (k in 0..7)."""
    import torch

    x = x.flip(-1) if k >= 4 else x
    return torch.rot90(x, k % 4, (-2, -1))


def undo_dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The inverse of dihedral_view(., k)."""
    import torch

    x = torch.rot90(x, -(k % 4), (-2, -1))
    return x.flip(-1) if k >= 4 else x
