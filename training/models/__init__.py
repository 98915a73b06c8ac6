"""Model registry: one name per architecture, each in its own module, plain PyTorch."""
from __future__ import annotations

from dataclasses import replace

from gee_export.contract import GlacierError

from .lgt_unet import PRESETS as LGT_PRESETS
from .lgt_unet import LGTUNet

MODELS = {"lgt-unet": (LGTUNet, LGT_PRESETS)}
# The paper's parameter counts (Table 3) where it gives one, in millions.
PAPER_PARAMS_M = {"lgt-unet": 107.5}


def build_model(name: str, preset: str, in_channels: int, num_classes: int = 2, **overrides):
    if name not in MODELS:
        raise GlacierError(f"--model {name!r}: known models are {', '.join(sorted(MODELS))}")
    cls, presets = MODELS[name]
    if preset not in presets:
        raise GlacierError(f"--preset {preset!r} for {name}: use one of {', '.join(presets)}")
    cfg = replace(presets[preset], **overrides) if overrides else presets[preset]
    return cls(in_channels, num_classes, cfg)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
