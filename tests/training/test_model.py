import numpy as np
import pytest
import torch

from training.data import dihedral
from training.losses import dice_ce_loss, loss_from_sums, loss_sums
from training.metrics import confusion, scores
from training.models import build_model, count_parameters
from training.models.lgt_unet import GlobalSubsampledAttention, LocallyGroupedAttention

torch.manual_seed(0)


@pytest.mark.parametrize("channels,size", [(1, 64), (3, 96), (7, 160), (11, 224)])
def test_shapes_for_odd_channels_and_sizes(channels, size):
    m = build_model("lgt-unet", "tiny", channels).eval()
    with torch.no_grad():
        assert m(torch.randn(1, channels, size, size)).shape == (1, 2, size, size)


def test_paper_preset_at_512_and_parameter_counts():
    m = build_model("lgt-unet", "paper", 11).eval()
    assert 23e6 < count_parameters(m) < 25e6
    assert 100e6 < count_parameters(build_model("lgt-unet", "paper-l", 11)) < 110e6
    with torch.no_grad():
        assert m(torch.randn(1, 11, 512, 512)).shape == (1, 2, 512, 512)


def _grad_footprint(attn, h, w, pos):
    x = torch.randn(1, h * w, 16, requires_grad=True)
    out = attn(x, h, w)
    out[0, pos].sum().backward()
    return (x.grad[0].abs().sum(-1) > 0).reshape(h, w)


def test_lsa_attends_only_inside_its_window():
    lsa = LocallyGroupedAttention(16, 2, 4)
    fp = _grad_footprint(lsa, 12, 12, 5 * 12 + 6)  # token (5, 6): window rows 4-7, cols 4-7
    expected = torch.zeros(12, 12, dtype=torch.bool)
    expected[4:8, 4:8] = True
    assert torch.equal(fp, expected)


def test_lsa_with_padding_ignores_padded_tokens():
    lsa = LocallyGroupedAttention(16, 2, 4)
    fp = _grad_footprint(lsa, 6, 6, 5 * 6 + 5)  # last token; window 4-7 padded beyond 6
    assert fp[4:, 4:].all() and fp.sum() == 4


def test_gsa_sees_every_window():
    gsa = GlobalSubsampledAttention(16, 2, 4)
    assert _grad_footprint(gsa, 12, 12, 0).all()


def _dice(logits: torch.Tensor, target: torch.Tensor) -> float:
    """The Dice term of the training loss: its sums with the cross-entropy's zeroed."""
    no_ce = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 1.0])
    return loss_from_sums(loss_sums(logits, target) * no_ce, eps=1e-6).item()


def test_dice_on_perfect_and_inverted_predictions():
    t = torch.tensor([[[1, 0], [1, 255]]])
    perfect = torch.tensor([[[[-20.0, 20.0], [-20.0, 0.0]], [[20.0, -20.0], [20.0, 0.0]]]])
    assert _dice(perfect, t) == pytest.approx(0.0, abs=1e-4)
    assert _dice(-perfect, t) == pytest.approx(1.0, abs=1e-4)
    assert dice_ce_loss(-perfect, t) > dice_ce_loss(perfect, t) + 10
    all_ignored = torch.full((1, 2, 2), 255)
    assert dice_ce_loss(perfect, all_ignored).item() == 0.0


def test_metrics_against_hand_computed_confusion():
    target = np.array([1, 1, 1, 0, 0, 0, 0, 255])
    pred = np.array([1, 1, 0, 1, 0, 0, 0, 1])
    cm = confusion(pred, target)
    assert cm.tolist() == [[3, 1], [1, 2]]
    s = scores(cm)
    assert s["oa"] == pytest.approx(5 / 7)
    assert s["precision_glacier"] == pytest.approx(2 / 3)
    assert s["recall_glacier"] == pytest.approx(2 / 3)
    assert s["iou_glacier"] == pytest.approx(2 / 4)
    assert s["iou_background"] == pytest.approx(3 / 5)
    assert s["miou"] == pytest.approx((0.5 + 0.6) / 2)
    assert s["f1_background"] == pytest.approx(0.75)


@pytest.mark.parametrize("k", range(8))
def test_augmentation_keeps_image_and_label_aligned(k):
    lbl = torch.zeros(8, 8, dtype=torch.long)
    lbl[1, 2] = 1
    img = torch.stack([lbl.float() * 5, torch.arange(64.0).reshape(8, 8)])
    i2, l2 = dihedral(img, lbl, k)
    assert torch.equal(i2[0] == 5, l2 == 1)
    assert len({tuple(dihedral(img, lbl, j)[1].flatten().tolist()) for j in range(8)}) == 8
