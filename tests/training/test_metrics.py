"""Segmentation metrics against hand counts, on an asymmetric confusion matrix (a symmetric
one cannot tell precision from recall, nor a matrix from its transpose)."""
import numpy as np
import pytest

from gee_export.common.bands import LABEL_IGNORE
from training.metrics import confusion, scores

# cm[true, predicted]: 60 background pixels (50 right, 10 called ice), 40 ice pixels (35
# right, 5 missed).
CM = np.array([[50, 10], [5, 35]])


def test_scores_of_an_asymmetric_matrix_by_hand():
    s = scores(CM)
    # glacier: 45 pixels called ice, 35 of them ice; 40 ice pixels, 35 of them found
    assert s["precision_glacier"] == pytest.approx(35 / 45)
    assert s["recall_glacier"] == pytest.approx(35 / 40)
    assert s["precision_background"] == pytest.approx(50 / 55)
    assert s["recall_background"] == pytest.approx(50 / 60)
    f1 = [2 * p * r / (p + r) for p, r in ((50 / 55, 50 / 60), (35 / 45, 35 / 40))]
    assert s["f1_background"] == pytest.approx(f1[0])
    assert s["f1_glacier"] == pytest.approx(f1[1])
    assert s["mf1"] == pytest.approx((f1[0] + f1[1]) / 2)
    assert s["iou_glacier"] == pytest.approx(35 / (35 + 10 + 5))
    assert s["iou_background"] == pytest.approx(50 / (50 + 5 + 10))
    assert s["miou"] == pytest.approx((35 / 50 + 50 / 65) / 2)
    assert s["oa"] == pytest.approx(85 / 100)


def test_a_class_never_predicted_scores_zero_not_nan():
    s = scores(np.array([[70, 0], [30, 0]]))  # a map without ice
    assert s["precision_glacier"] == 0 and s["recall_glacier"] == 0 and s["f1_glacier"] == 0
    assert s["iou_glacier"] == 0 and s["oa"] == pytest.approx(0.7)
    assert s["recall_background"] == 1 and s["precision_background"] == pytest.approx(0.7)
    assert scores(np.zeros((2, 2)))["oa"] == 0


def test_confusion_counts_true_rows_predicted_columns_and_skips_ignored_labels():
    target = np.array([[0, 0, 0, 1], [1, 1, LABEL_IGNORE, LABEL_IGNORE]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [0, 1, 1, 0]], np.uint8)
    # by hand: background 3 (1 right, 2 called ice), ice 3 (2 found, 1 missed), 2 ignored
    assert confusion(pred, target).tolist() == [[1, 2], [1, 2]]
    target[0, 0] = 1  # now 2 background (both called ice), 4 ice (2 found, 2 missed)
    assert confusion(pred, target).tolist() == [[0, 2], [2, 2]]
    assert confusion(pred, target).sum() == (target != LABEL_IGNORE).sum()
