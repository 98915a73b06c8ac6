"""What the recipe's spectral snow rule (NDSI >= 0.4 and B11 <= 0.2 keeps a pixel Cloud
Score+ flags) lets back in, on the demo's July scene against its truth, for the rule and
tighter variants. Not a speed benchmark: a measurement of a trade-off.

    .venv/bin/python benchmarks/snow_rule.py
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gee_export.config import RecipeConfig
from gee_export.demo.scene import INVENTORY_YEAR, DemoScene
from gee_export.demo.sensors import render_s2
from gee_export.local import snow_ice


@dataclass
class SnowRuleFigures:
    """Over the pixels Cloud Score+ flags (cs_cdf below the threshold) on one date: how many
    are clean (bright snow it mistakes for cloud) and how many the spectral snow rule keeps,
    by what actually covers them."""
    flagged: int
    flagged_clean: int
    restored_clean: int
    flagged_contaminated: int
    let_back: dict[str, int]  # cirrus, shadow, cloud: contaminated pixels the rule keeps
    let_back_on_glaciers: int
    glacier_b3_error: float  # mean |B3 - the clean date's B3| of those on glaciers


def measure_snow_rule(cfg: RecipeConfig, scene: DemoScene | None = None,
                      year: int = INVENTORY_YEAR, step: int = 2) -> SnowRuleFigures:
    """The July scene (thin cirrus, clouds, their shadows, and Cloud Score+'s confusion of
    bright snow with cloud) against the cloud-free August one, every `step` pixels."""
    scene = scene or DemoScene()
    g = scene.grid
    cols, rows = np.meshgrid(np.arange(0, g.width, step) + 0.5,
                             np.arange(0, g.height, step) + 0.5)
    xs, ys = g.transform * (cols, rows)
    july, clean = render_s2(scene, xs, ys, year, 0), render_s2(scene, xs, ys, year, 1)
    refl = dict(zip(("B2", "B3", "B4", "B8", "B11"), july.reflectance))
    flagged = july.cs_cdf < cfg.cloud_score_threshold
    kept = flagged & snow_ice(refl, cfg)
    dirty = july.contamination > 0.05
    op = scene.cloud(xs, ys, year, 0)
    cause = {"cirrus": scene.cirrus(xs, ys, year, 0) > 0.05,
             "shadow": np.clip(scene.cloud(xs + 500, ys - 500, year, 0) - op, 0, 1) > 0.05,
             "cloud": op > 0.05}
    on_ice = kept & dirty & scene.surface(xs, ys, year)["glacier"]
    error = np.abs(refl["B3"] - clean.reflectance[1])[on_ice]
    return SnowRuleFigures(int(flagged.sum()), int((flagged & ~dirty).sum()),
                           int((kept & ~dirty).sum()), int((flagged & dirty).sum()),
                           {k: int((kept & dirty & v).sum()) for k, v in cause.items()},
                           int(on_ice.sum()), float(error.mean()) if error.size else 0.0)


def main():
    scene = DemoScene()
    base = RecipeConfig(2018)
    variants = {"recipe: NDSI >= 0.4, B11 <= 0.2": base,
                "B11 <= 0.12": base.with_(snow_b11_max=0.12),
                "NDSI >= 0.6": base.with_(snow_ndsi_min=0.6),
                "NDSI >= 0.6, B11 <= 0.12": base.with_(snow_ndsi_min=0.6, snow_b11_max=0.12)}
    print(f"{'rule':<34} {'clean snow kept':>16} {'dirty let back':>15} {'cirrus':>7} "
          f"{'shadow':>7} {'cloud':>6} {'on ice':>7} {'|dB3| ice':>9}")
    for name, cfg in variants.items():
        f = measure_snow_rule(cfg, scene)
        dirty = sum(f.let_back.values()) / max(1, f.flagged_contaminated)
        print(f"{name:<34} {f.restored_clean:>7}/{f.flagged_clean:<8} {dirty:>14.1%} "
              f"{f.let_back['cirrus']:>7} {f.let_back['shadow']:>7} {f.let_back['cloud']:>6} "
              f"{f.let_back_on_glaciers:>7} {f.glacier_b3_error:>9.3f}")


if __name__ == "__main__":
    main()
