"""Model registry: one name per architecture or ablation variant, each architecture in its own
module, plain PyTorch. Every model maps (B, bands, H, W) to (B, classes, H, W) logits for any
H, W that are multiples of 32."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from gee_export.common.errors import InputError

from . import deeplab, lgt_unet, swin_unet, unet

PATTERNS = ("LL", "LG", "GG")


@dataclass(frozen=True)
class ModelSpec:
    cls: type
    presets: dict
    overrides: dict = field(default_factory=dict)  # applied to every preset (ablations)
    description: str = ""


MODELS: dict[str, ModelSpec] = {
    "lgt-unet": ModelSpec(lgt_unet.LGTUNet, lgt_unet.PRESETS, {},
                          "the paper's model: LGT encoder (LSA/GSA, CPE), LGCB decoder, FRH"),
    # Table 3 ablations of the encoder's attention pattern, the decoder and the position code.
    "lgt-unet-ll": ModelSpec(lgt_unet.LGTUNet, lgt_unet.PRESETS, {"patterns": ("LL",) * 4},
                             "ablation: local attention only (LSA in every block)"),
    "lgt-unet-gg": ModelSpec(lgt_unet.LGTUNet, lgt_unet.PRESETS, {"patterns": ("GG",) * 4},
                             "ablation: global sub-sampled attention only (GSA in every block)"),
    "lgt-unet-cnn-decoder": ModelSpec(lgt_unet.LGTUNet, lgt_unet.PRESETS, {"decoder": "cnn"},
                                      "ablation: ResNet-18 blocks in place of LGCB"),
    "lgt-unet-transformer-decoder": ModelSpec(
        lgt_unet.LGTUNet, lgt_unet.PRESETS, {"decoder": "transformer"},
        "ablation: Transformer (LSA) blocks in place of LGCB"),
    "lgt-unet-ape": ModelSpec(lgt_unet.LGTUNet, lgt_unet.PRESETS, {"position": "ape"},
                              "ablation: learned absolute position embedding in place of CPE"),
    # Table 2 baselines.
    "unet": ModelSpec(unet.UNet, unet.PRESETS, {}, "U-Net (Ronneberger et al. 2015)"),
    "deeplabv3plus": ModelSpec(deeplab.DeepLabV3Plus, deeplab.PRESETS, {},
                               "DeepLab V3+ on ResNet-50 (Chen et al. 2018)"),
    "attention-deeplabv3plus": ModelSpec(deeplab.DeepLabV3Plus, deeplab.ATTENTION_PRESETS, {},
                                         "DeepLab V3+ with CBAM beside the ASPP (Chu et al. "
                                         "2022)"),
    "swin-unet": ModelSpec(swin_unet.SwinUNet, swin_unet.PRESETS, {},
                           "Swin U-Net (Cao et al. 2021)"),
}
# Parameter counts the paper gives (Table 3), in millions; other models it does not count.
PAPER_PARAMS_M = {"lgt-unet": 107.5, "lgt-unet-cnn-decoder": 40.1}
PAPER_PRESETS = ("paper", "paper-l")  # the presets meant to be the paper's model


def paper_params_m(model: str, preset: str) -> float | None:
    """The paper's parameter count for a model, shown beside the paper presets only."""
    return PAPER_PARAMS_M.get(model) if preset in PAPER_PRESETS else None


def resolve(name: str) -> tuple[ModelSpec, dict]:
    """A registry name, or `lgt-unet:P1-P2-P3-P4` with one attention pattern per stage."""
    if name.startswith("lgt-unet:"):
        stages = tuple(name.split(":", 1)[1].upper().split("-"))
        if len(stages) != 4 or any(p not in PATTERNS for p in stages):
            raise InputError(f"--model {name!r}: give four stage patterns from "
                               f"{'/'.join(PATTERNS)}, e.g. lgt-unet:LL-LG-LG-GG")
        return MODELS["lgt-unet"], {"patterns": stages}
    if name not in MODELS:
        raise InputError(f"--model {name!r}: known models are {', '.join(MODELS)} "
                           "(or lgt-unet:P1-P2-P3-P4 with patterns LL, LG, GG per stage)")
    spec = MODELS[name]
    return spec, dict(spec.overrides)


def build_model(name: str, preset: str, in_channels: int, num_classes: int = 2,
                **overrides: Any) -> nn.Module:
    spec, base = resolve(name)
    if preset not in spec.presets:
        raise InputError(f"--preset {preset!r} for {name}: use one of "
                         f"{', '.join(spec.presets)}")
    cfg = replace(spec.presets[preset], **{**base, **overrides})
    return spec.cls(in_channels, num_classes, cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
