"""Every registered model passes the same checks: shapes for odd band counts and sizes,
gradients reaching every parameter, and a save/load round trip; plus the Swin shift mask."""
from __future__ import annotations

import io

import pytest
import torch

from gee_export.common.errors import GlacierError
from training.models import MODELS, build_model, count_parameters
from training.models.swin_unet import SwinBlock

ALL = list(MODELS) + ["lgt-unet:LL-LG-GG-GG"]


@pytest.mark.parametrize("name", ALL)
def test_shapes_gradients_and_save_load(name):
    torch.manual_seed(0)
    m = build_model(name, "tiny", 3)
    x = torch.randn(2, 3, 96, 96)  # 96: token maps of 24, 12, 6, 3 (not window multiples)
    y = m(x)
    assert y.shape == (2, 2, 96, 96)
    y.square().mean().backward()
    no_grad = [n for n, p in m.named_parameters() if p.grad is None]
    assert not no_grad, no_grad
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())
    m.eval()
    x5 = torch.randn(1, 5, 64, 64)
    m5 = build_model(name, "tiny", 5).eval()
    buf = io.BytesIO()
    torch.save(m5.state_dict(), buf)
    buf.seek(0)
    again = build_model(name, "tiny", 5).eval()
    again.load_state_dict(torch.load(buf, weights_only=True))
    with torch.no_grad():
        assert torch.equal(m5(x5), again(x5))


def test_paper_presets_have_plausible_sizes():
    sizes = {n: count_parameters(build_model(n, "paper", 11)) / 1e6
             for n in ("unet", "deeplabv3plus", "swin-unet")}
    assert 30 < sizes["unet"] < 32  # Ronneberger's U-Net: 31.0 M
    assert 39 < sizes["deeplabv3plus"] < 42  # ResNet-50 DeepLab V3+: about 40 M
    assert 26 < sizes["swin-unet"] < 28  # Swin-Unet (Swin-T): about 27 M


def test_unknown_model_and_bad_patterns_are_refused():
    with pytest.raises(GlacierError, match="known models"):
        build_model("segformer", "tiny", 3)
    with pytest.raises(GlacierError, match="four stage patterns"):
        build_model("lgt-unet:LL-XX-LG-GG", "tiny", 3)
    with pytest.raises(GlacierError, match="--preset"):
        build_model("unet", "paper-l", 3)


def test_swin_shifted_window_stays_inside_its_region():
    """A token in the wrapped-around corner region must not see the tokens it only
    neighbours after the cyclic shift (checked through gradients, not by reading code)."""
    torch.manual_seed(0)
    blk = SwinBlock(8, 2, 4, shift=True, mlp_ratio=1.0)
    x = torch.randn(1, 8, 8, 8, requires_grad=True)
    out = blk(x)
    out[0, 0, 0].sum().backward()  # token (0, 0): after the shift, in the last window
    seen = x.grad[0].abs().sum(-1) > 0
    # Shifted by 2: the window covering (0, 0) holds rows/cols 6-7 and 0-1; (0, 0) belongs to
    # the region of rows 0-1 x cols 0-1 only.
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[0:2, 0:2] = True
    assert torch.equal(seen, expected)
