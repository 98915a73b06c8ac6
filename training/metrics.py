"""Segmentation metrics from one confusion matrix over all valid pixels (not per tile)."""
from __future__ import annotations

import numpy as np

from gee_export.common.bands import LABEL_IGNORE

CLASSES = ("background", "glacier")


def confusion(pred: np.ndarray, target: np.ndarray, n: int = 2) -> np.ndarray:
    """cm[true, predicted] over pixels whose label is not 255."""
    valid = target != LABEL_IGNORE
    idx = target[valid].astype(np.int64) * n + pred[valid].astype(np.int64)
    return np.bincount(idx, minlength=n * n).reshape(n, n)


def scores(cm: np.ndarray) -> dict[str, float]:
    """OA; per-class precision, recall, F1, IoU; their means (the paper's mF1 and mIoU)."""
    cm = cm.astype(np.float64)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), 0.0)
    out = {"oa": float(tp.sum() / cm.sum()) if cm.sum() else 0.0,
           "mf1": float(f1.mean()), "miou": float(iou.mean())}
    for i, c in enumerate(CLASSES):
        out.update({f"precision_{c}": float(precision[i]), f"recall_{c}": float(recall[i]),
                    f"f1_{c}": float(f1[i]), f"iou_{c}": float(iou[i])})
    return out
