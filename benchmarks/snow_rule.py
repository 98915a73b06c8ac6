"""What the recipe's spectral snow rule (NDSI >= 0.4 and B11 <= 0.2 keeps a pixel Cloud
Score+ flags) lets back in, on the demo's July scene against its truth, for the rule and
tighter variants. Not a speed benchmark: a measurement of a trade-off.

    .venv/bin/python benchmarks/snow_rule.py
"""
from __future__ import annotations

from gee_export.config import RecipeConfig
from gee_export.demo import DemoScene, measure_snow_rule


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
