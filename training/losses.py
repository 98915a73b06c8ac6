"""Losses of the paper (section 2.3): two-class Dice (eq. 10) plus cross-entropy."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from gee_export.common.bands import LABEL_IGNORE

DICE_EPS = 1.0  # smoothing of eq. 10's fractions; keeps the loss finite on empty tiles


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = DICE_EPS) -> torch.Tensor:
    """1 - (sum p r + e)/(sum (p + r) + e) - (sum (1-p)(1-r) + e)/(sum (2 - p - r) + e).

    p is the glacier probability, r the reference; sums over valid pixels (label != 255).
    0 for a perfect prediction, 1 for a completely wrong one.
    """
    valid = target != LABEL_IGNORE
    p = torch.softmax(logits.float(), dim=1)[:, 1][valid]
    r = (target[valid] == 1).float()
    fg = (p * r).sum() + eps
    bg = ((1 - p) * (1 - r)).sum() + eps
    return 1 - fg / ((p + r).sum() + eps) - bg / ((2 - p - r).sum() + eps)


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if not (target != LABEL_IGNORE).any():
        return logits.sum() * 0.0  # a tile of nodata only: no gradient, no NaN
    ce = F.cross_entropy(logits.float(), target.long(), ignore_index=LABEL_IGNORE)
    return dice_loss(logits, target) + ce
