"""Whether a scene is comparable with the data a checkpoint trained on: its export's
normalization, and its band statistics against the training ones (warnings, never refusals).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from gee_export.common.bands import BAND_NAMES

if TYPE_CHECKING:
    from rasterio.io import DatasetReader


def normalization_warnings(meta: dict, export: dict, sample_mean: dict[str, float],
                           sigmas: float = 3.0) -> list[str]:
    """Why this scene may not be comparable with the training data, band by band."""
    warnings = []
    trained = meta.get("export_normalization") or {}
    here = export.get("normalization") or {}
    if trained and here:
        differ = [b for b in BAND_NAMES
                  if trained.get("ranges", {}).get(b) != here.get("ranges", {}).get(b)]
        if differ or trained.get("mode") != here.get("mode"):
            warnings.append(
                f"the export is normalized differently from the training data ({here.get('mode')}"
                f" vs {trained.get('mode')}; bands {', '.join(differ) or 'none'} differ): "
                "re-export with --norm-from the training export")
    stats = meta["norm_stats"]
    far = []
    for b, m, s in zip(stats["bands"], stats["mean"], stats["std"]):
        if b in sample_mean and np.isfinite(sample_mean[b]) and \
                abs(sample_mean[b] - m) > sigmas * s:
            far.append(f"{b} (mean {sample_mean[b]:.3f}, training {m:.3f} +- {s:.3f})")
    if far:
        warnings.append("band statistics far outside the training range: " + "; ".join(far))
    return warnings


def sample_band_means(src: DatasetReader, band_idx: list[int], names: list[str], n: int = 16,
                      size: int = 128, seed: int = 0) -> dict[str, float]:
    """Per-band mean over n random small windows: a bounded look at the scene (few, larger
    windows: each read through the VRT costs a fixed few milliseconds)."""
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    sums, counts = np.zeros(len(band_idx)), np.zeros(len(band_idx))
    for _ in range(n):
        r = int(rng.integers(0, max(1, src.height - size)))
        c = int(rng.integers(0, max(1, src.width - size)))
        a = src.read(band_idx, window=Window(c, r, min(size, src.width), min(size, src.height)))
        ok = np.isfinite(a)
        sums += np.where(ok, a, 0).sum(axis=(1, 2))
        counts += ok.sum(axis=(1, 2))
    with np.errstate(invalid="ignore"):
        return {b: float(s / k) if k else float("nan") for b, s, k in zip(names, sums, counts)}
