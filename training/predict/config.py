"""The options of a prediction: its window, blending, outline cleaning, memory and device."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PredictConfig:
    window: int | None = None  # default: the checkpoint's tile size (what the model saw)
    overlap: int | None = None  # default: a quarter of the window
    batch_size: int = 4
    threshold: float = 0.5
    min_area_km2: float = 0.05  # paper: glaciers over 0.05 km^2 (2072 in Qilian)
    max_hole_km2: float = 0.01  # holes smaller than this are filled (1 ha: 100 pixels)
    simplify_m: float = 0.0  # 0 keeps the pixel staircase exactly
    band_width: int = 4096  # columns per streamed band: bounds memory on wide scenes
    device: str = "auto"
    amp: bool = False  # bf16 autocast on CUDA (see TrainConfig.amp)
    tta: bool = False  # average over the 8 rotations and flips; band 2 holds their spread
