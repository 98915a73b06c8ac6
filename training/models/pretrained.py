"""Published weights into our models (`train run --init PATH`).

- Twins-SVT-S/B/L (timm's `twins_svt_small/base/large`, key names as timm saves them) into the
  encoder of `lgt-unet` and its ablations (presets paper, paper-b, paper-l);
- ResNet-18/50 (torchvision's key names) into the backbone of the DeepLab V3+ baselines, and
  ResNet-18's two 64-channel layer1 blocks into the two finest residual blocks of
  `lgt-unet-cnn-decoder` (paper preset, decoder width 64).

Our modules carry the reference names, so mapping a key is adding a prefix. The first
convolution is the one tensor that sees the bands (`fit_input_conv`): one saved for as many
input channels as the run has bands is taken as is (weights trained on our stack); one with
3 channels is read as RGB, as published ImageNet weights are, and adapted to the bands by one
rule (`adapt_input_conv`); any other count is refused. A file whose keys or shapes do not fit
is refused with one line naming the first mismatch; nothing is loaded then.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from gee_export.common.errors import InputError, InputNotFoundError

# The RGB channels of an ImageNet model's first convolution, as our band names.
RGB_BANDS = ("B4", "B3", "B2")
# The keys of the first convolution, the one tensor whose input channels are the bands.
FIRST_CONVS = ("patch_embeds.0.proj.weight", "conv1.weight")


@dataclass
class InitReport:
    """What --init did: tensors loaded, adapted to the bands, and left at random init."""
    files: list[str] = field(default_factory=list)
    loaded: int = 0
    adapted: list[str] = field(default_factory=list)
    unused: int = 0  # tensors in the files that have no place here (classifier heads)
    random: list[str] = field(default_factory=list)  # our tensors no file provided

    def describe(self) -> str:
        return (f"--init: {self.loaded} tensors from {', '.join(self.files)} "
                f"({len(self.adapted)} adapted to the bands: {', '.join(self.adapted) or '-'}; "
                f"{self.unused} unused); {len(self.random)} tensors keep their random init")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a torch file (read as data, never code),
    unwrapped from the usual {"state_dict": ...} / {"model": ...} containers."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"--init {path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # several loaders, several exception types
        raise InputError(f"--init {path}: cannot be read as weights ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:120] if str(e) else ''})") from None
    for key in ("state_dict", "model", "model_state"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise InputError(f"--init {path}: holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def kind_of(sd: dict, path: Path) -> str:
    if "patch_embeds.0.proj.weight" in sd:
        return "twins"
    if "conv1.weight" in sd and "layer1.0.conv1.weight" in sd:
        return "resnet"
    raise InputError(f"--init {path}: neither Twins-SVT (timm) nor ResNet (torchvision) key "
                     f"names; its first key is {next(iter(sd), '(none)')!r}")


def adapt_input_conv(weight: torch.Tensor, bands: list[str]) -> torch.Tensor:
    """A first-layer kernel for RGB inputs, (out, 3, k, k), made into one for `bands`: B4, B3
    and B2 take the red, green and blue kernels, every other band the mean of the three; then
    all are scaled by 3 / len(bands), so that bands which vary together (as standardized
    optical bands largely do) give the layer the response magnitude it was trained with. This
    is timm's rule for more than three channels, with the RGB kernels kept in their places."""
    mean = weight.mean(1)
    rgb = {b: weight[:, i] for i, b in enumerate(RGB_BANDS)}
    return torch.stack([rgb.get(b, mean) for b in bands], 1) * (3 / len(bands))


def fit_input_conv(weight: torch.Tensor, bands: list[str]) -> torch.Tensor | None:
    """A file's first-layer kernel (out, channels, k, k) for a run on `bands`.

    Args:
        weight: the kernel as the file holds it.
        bands: the run's band names, in the order the model sees them.

    Returns:
        The kernel adapted by `adapt_input_conv` when it has 3 channels (RGB, whatever the
        band count: published weights are RGB); the kernel itself when it has one channel per
        band; None for any other count, which the caller refuses.
    """
    channels = weight.shape[1]
    if channels == len(RGB_BANDS):
        return adapt_input_conv(weight, bands)
    return weight if channels == len(bands) else None


def _targets(model_name: str, kind: str) -> tuple[Callable[[str], str | None], tuple[str, ...]]:
    """How a key of the file maps into the model (None: not used), and the prefix of our
    tensors that the file is expected to cover completely."""
    lgt = model_name.startswith("lgt-unet")
    if kind == "twins" and lgt:
        return (lambda k: None if k.startswith("head.") else f"encoder.{k}"), "encoder."
    if kind == "resnet" and "deeplab" in model_name:
        return (lambda k: None if k.startswith("fc.") else f"backbone.{k}"), ("backbone.",)
    if kind == "resnet" and model_name == "lgt-unet-cnn-decoder":
        blocks = {"layer1.0.": "decoder.b3.", "layer1.1.": "decoder.b2."}

        def to_decoder(k: str) -> str | None:
            m = re.match(r"layer1\.[01]\.", k)
            return blocks[m.group(0)] + k[m.end():] if m else None
        return to_decoder, tuple(blocks.values())
    fits = {"twins": "lgt-unet and its ablations",
            "resnet": "deeplabv3plus, attention-deeplabv3plus and lgt-unet-cnn-decoder"}
    raise InputError(f"--init: {kind} weights do not fit --model {model_name}; they fit "
                     f"{fits[kind]}")


def load_pretrained(model: nn.Module, model_name: str, paths: list[Path],
                    bands: list[str]) -> InitReport:
    """Load published weights into `model` in place; InputError (nothing loaded) when a file
    does not fit."""
    ours = model.state_dict()
    new: dict[str, torch.Tensor] = {}
    report = InitReport()
    for path in paths:
        sd = read_state_dict(path)
        target, scope = _targets(model_name, kind_of(sd, path))
        for key, tensor in sd.items():
            dst = target(key)
            if dst is None:
                report.unused += 1
                continue
            if dst not in ours:
                raise InputError(f"--init {path}: {key} has no place in --model {model_name} "
                                 f"(looked for {dst})")
            if key in FIRST_CONVS and tensor.ndim == 4:
                fitted = fit_input_conv(tensor, bands)
                if fitted is None:
                    raise InputError(
                        f"--init {path}: {key} is {tuple(tensor.shape)} in the file but "
                        f"{tuple(ours[dst].shape)} in --model {model_name}: its "
                        f"{tensor.shape[1]} input channels are neither 3 (RGB, adapted to the "
                        f"bands) nor the run's {len(bands)} bands")
                if tensor.shape[1] == len(RGB_BANDS):
                    report.adapted.append(key)
                tensor = fitted
            if tensor.shape != ours[dst].shape:
                raise InputError(f"--init {path}: {key} is {tuple(tensor.shape)} in the file "
                                 f"but {tuple(ours[dst].shape)} in --model {model_name} "
                                 "(another --preset?)")
            new[dst] = tensor.to(ours[dst].dtype)
        missing = [k for k in ours if k.startswith(scope) and k not in new
                   and not k.endswith("num_batches_tracked")]
        if missing:
            raise InputError(f"--init {path}: has nothing for {missing[0]} (and "
                             f"{len(missing) - 1} more) of --model {model_name}")
        report.files.append(Path(path).name)
    model.load_state_dict(new, strict=False)
    report.loaded = len(new)
    report.random = [k for k in ours if k not in new]
    return report
