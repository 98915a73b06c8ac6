"""Losses of the paper (section 2.3): two-class Dice (eq. 10) plus cross-entropy.

Both are computed from sums over the valid pixels of the whole batch. Under DDP the sums are
all-reduced (with autograd) before the ratios are taken, so every process optimizes the loss
of the global batch, the same loss a single process would compute for it.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from gee_export.common.bands import LABEL_IGNORE

DICE_EPS = 1.0  # smoothing of eq. 10's fractions; keeps the loss finite on empty tiles


def loss_sums(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[sum p r, sum (p + r), sum (1-p)(1-r), sum (2 - p - r), sum of CE, valid pixels], with
    p the glacier probability and r the reference, over pixels whose label is not 255."""
    valid = target != LABEL_IGNORE
    logits = logits.float()
    p = torch.softmax(logits, dim=1)[:, 1][valid]
    r = (target[valid] == 1).float()
    ce = F.cross_entropy(logits, target.long(), ignore_index=LABEL_IGNORE, reduction="sum")
    return torch.stack([(p * r).sum(), (p + r).sum(), ((1 - p) * (1 - r)).sum(),
                        (2 - p - r).sum(), ce, valid.sum().float()])


def loss_from_sums(s: torch.Tensor, eps: float = DICE_EPS) -> torch.Tensor:
    """Dice (eq. 10: 0 for a perfect prediction, 1 for a completely wrong one) plus the mean
    cross-entropy; 0 when there is no valid pixel."""
    dice = 1 - (s[0] + eps) / (s[1] + eps) - (s[2] + eps) / (s[3] + eps)
    return torch.where(s[5] > 0, dice + s[4] / s[5].clamp(min=1), s[5] * 0)


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor,
                 reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """The training loss of a batch; `reduce` combines the sums of all processes (DDP)."""
    s = loss_sums(logits, target)
    return loss_from_sums(reduce(s) if reduce is not None else s)
