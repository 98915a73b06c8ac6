"""Which predictions a change needs: its years, the variant a prediction's options make, an
ensemble's checkpoints checked before they predict, and every year predicted (or reused)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from gee_export.common.errors import InputError, StateError
from gee_export.common.layout import ZONES_MANIFEST, read_manifest

if TYPE_CHECKING:
    from ..predict import PredictConfig


def parse_years(spec: str) -> list[int]:
    """'2018-2024' or '2018,2020,2024'."""
    try:
        if "-" in spec:
            a, b = (int(v) for v in spec.split("-"))
            years = list(range(a, b + 1))
        else:
            years = sorted({int(v) for v in spec.split(",")})
    except ValueError:
        raise InputError(f"--years {spec!r}: give FIRST-LAST (2018-2024) or a list "
                         "(2018,2020,2024)") from None
    if "-" in spec and len(years) < 2 and years != [int(spec.split("-")[0])]:
        raise InputError(f"--years {spec!r}: FIRST comes before LAST")
    if len(years) < 2:
        raise InputError(f"--years {spec!r}: a change needs at least two years")
    return years


# Prediction options that change what a prediction is (--batch-size and --device change only
# how fast it is made): predictions made with others are a variant, named apart.
VARIANT_OPTIONS = ("tta", "threshold", "window", "overlap", "amp")


def _variant(cfg: PredictConfig) -> list[tuple[str, object]]:
    from ..predict import PredictConfig

    default = PredictConfig()
    return [(k, getattr(cfg, k)) for k in VARIANT_OPTIONS
            if getattr(cfg, k) != getattr(default, k)]


def variant_flags(cfg: PredictConfig) -> list[str]:
    """The options of `cfg` that differ from train predict's defaults, as it takes them."""
    return [a for k, v in _variant(cfg) for a in ([f"--{k}"] if isinstance(v, bool)
                                                   else [f"--{k}", f"{v:g}"])]


def variant_name(name: str, cfg: PredictConfig) -> str:
    """NAME, or NAME-tta-threshold0.6 for predictions (and the change measured on them) made
    with other options than the defaults, so that each variant lives beside the others."""
    return "-".join([name] + [k if isinstance(v, bool) else f"{k}{v:g}"
                              for k, v in _variant(cfg)])


def check_members(checkpoints: Sequence[Path]) -> None:
    """An ensemble's checkpoints, before any of them predicts: the same bands and training
    tiles (another --seed), and different weights.

    Raises:
        InputError: naming the member at fault and how it differs from the first.
    """
    from gee_export.common.layout import file_sha256

    from ..predict import checkpoint_tiles
    from ..runtime import load_checkpoint

    seen: dict[str, Path] = {}
    first = None
    for c in checkpoints:
        ck = load_checkpoint(c)
        recipe = {"bands": ck["meta"].get("band_names"),
                  "tiles": (checkpoint_tiles(c, ck.get("config") or {}) or {}).get("tiles_id")}
        sha = file_sha256(c)
        if sha in seen:
            raise InputError(f"--checkpoint: {c} and {seen[sha]} are the same checkpoint; an "
                             "ensemble needs different ones")
        seen[sha] = c
        first = first or (c, recipe)
        diff = [f"{k}: {first[1][k]} -> {v}" for k, v in recipe.items() if v != first[1][k]]
        if diff:
            raise InputError(f"--checkpoint: {c} was trained otherwise than {first[0]} "
                             f"({', '.join(diff)}); an ensemble's members differ in their "
                             "weights only (the same recipe and tiles, another --seed)")


def predict_years(checkpoint: Path, workspace: Path, region: str, years: list[int],
                  predict_cfg: PredictConfig, quiet: bool,
                  echo: Callable[[str], None], wait: bool = False) -> list[Path]:
    """Run (or resume) `train predict` for every year whose export exists; name the others."""
    import shlex

    from gee_export.common.layout import EXPORTS_DIR, prediction_dir, product_name
    from gee_export.common.zoned import zoned_parts

    from ..predict import predict
    from ..zoned import predict_zoned

    found, missing = [], []
    for year in years:
        exp = Path(workspace) / EXPORTS_DIR / product_name(region, year)
        ok = (exp / "export.json").is_file() and read_manifest(exp, "export").get("complete") \
            or (exp / ZONES_MANIFEST).is_file()
        (found if ok else missing).append((year, exp))
    if missing:
        echo(f"no complete export for {', '.join(str(y) for y, _ in missing)}; make them with "
             f"`prep export --region {region} --year YEAR`")
    if len(found) < 2:
        raise InputError(f"--region {region} --years: {len(found)} of {len(years)} years have a "
                         "complete export; a change needs two")
    out = []
    for year, exp in found:
        echo(f"{year}: predicting {exp}")
        name = variant_name(exp.name, predict_cfg)  # a variant beside the plain predictions
        try:
            if zoned_parts(exp, "export") is None:
                out.append(predict(checkpoint, exp, workspace, predict_cfg, name, quiet=quiet,
                                   echo=echo, wait=wait))
            else:
                out.append(predict_zoned(exp, prediction_dir(workspace, checkpoint, name),
                                         workspace, lambda part, name: predict(
                                             checkpoint, part, workspace, predict_cfg, name,
                                             quiet=quiet, echo=echo, wait=wait),
                                         ("gpkg",), echo))
        except StateError as e:
            if "was made with other options" not in str(e):
                raise
            remake = shlex.join(["train", "predict", "--checkpoint", str(checkpoint),
                                 "--export", str(exp), "--name", name,
                                 *variant_flags(predict_cfg), "--workspace", str(workspace),
                                 "--force"])
            raise StateError(f"{str(e).split('; use --force')[0]}; train change reuses that "
                             "prediction: rerun with the options it was made with, or remake "
                             f"it first with `{remake}`") from None
    return out



def predictions_to_measure(checkpoints: Sequence[Path], predictions: Sequence[Path],
                           region: str | None, years: str | None, predict_cfg: PredictConfig,
                           given: Sequence[str], workspace: Path, quiet: bool,
                           echo: Callable[[str], None], wait: bool = False) -> list[list[Path]]:
    """Each model's predictions of every year, the first model's first: --predictions as
    they were made, or those every --checkpoint makes (or reuses) of REGION's exports.

    Args:
        given: the options given on the command line that choose and make predictions
            (--region, --years and train predict's), which --predictions do not take.

    Raises:
        InputError: neither or both of --checkpoint and --predictions, an option that goes
            with the other, --checkpoint without --region and --years, or a member twice.
    """
    if bool(checkpoints) == bool(predictions):
        raise InputError("give either --checkpoint with --region and --years, or "
                         "--predictions DIR (repeated)")
    if predictions:
        if given:
            raise InputError(f"{', '.join(given)}: these choose and make predictions, "
                             "so they go with --checkpoint; --predictions are measured "
                             "as they were made")
        return [list(predictions)]
    if not region or not years:
        raise InputError("--checkpoint needs --region and --years")
    if len(set(checkpoints)) != len(checkpoints):
        raise InputError("--checkpoint: the same file twice; an ensemble needs "
                         "different checkpoints")
    if len(checkpoints) > 1:
        check_members([Path(c) for c in checkpoints])  # before any member predicts
    return [predict_years(Path(c), workspace, region, parse_years(years), predict_cfg, quiet,
                          echo, wait) for c in checkpoints]
