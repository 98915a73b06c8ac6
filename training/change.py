"""`train change`: each glacier's area, year by year, with a 1-sigma uncertainty, and its
rate of change with a 90 % confidence interval.

The method is stated once, in _METHOD, _UNCERTAINTY and _TOTAL below and in trend.METHOD;
change.json carries these texts, so a result says how it was made.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from gee_export.common.atomic import as_stored, write_bytes, write_json
from gee_export.common.errors import InputError, StateError
from gee_export.common.layout import (
    CHANGE_FILES,
    PREDICTION_MANIFEST,
    PREDICTIONS_DIR,
    PROBABILITY_TIF,
    ZONES_MANIFEST,
    base_manifest,
    check_name,
    file_sha256,
    now_iso,
    read_manifest,
    require_complete,
    resolved_path,
    stored_path,
)
from gee_export.common.outlines import MIN_GLACIER_AREA_KM2
from gee_export.common.stac import update_catalog
from gee_export.common.stage import DONE, Stage, differences

from .area_error import AreaErrorModel
from .change_map import write_change_map
from .trend import METHOD as RATE_METHOD
from .trend import Z90, RateFit, t90, wls_rate
from .uncertainty import (
    CORRELATION_MODEL,
    Levels,
    Series,
    area_sigma,
    glacier_rate,
    levels,
    pooled_year_sigma,
    total,
    with_divides,
)
from .zones import ZONE_BUFFER_M, ZoneCounts, ellipsoidal_ratios

if TYPE_CHECKING:
    from gee_export.common.outlines import Outlines
    from gee_export.common.utm import Strip

    from .predict import PredictConfig

BOUNDS_MARGIN = 0.1  # without --tta: the edge envelope at threshold -/+ this
SIGMA_FLOOR_KM2 = 1e-4  # one 10 m pixel: the least a year's area is known to
# A year in which a glacier shows no ice: ice under half the paper's 0.05 km^2 minimum area can
# go unseen, so its zero is known to this much (1 sigma), not to a pixel.
DETECTION_LIMIT_KM2 = MIN_GLACIER_AREA_KM2 / 2
COVERAGE_MIN_KM2 = 0.1  # the truth check judges the intervals of glaciers larger than this
RULES = ("ice", "low", "high")
MIN_OBSERVED = 0.9  # a glacier seen over less of its outline gets no area that year
# The pixel staircase of a traced outline is 4/pi times as long as the smooth line it follows
# (averaged over orientations), so the buffer method takes pi/4 of its length.
STAIRCASE_TO_LINE = math.pi / 4
UNIFORM_SIGMA = 1 / math.sqrt(12)  # sd of a share uniform on [0, 1]: an unseen part's ice

_METHOD = (
    "One prediction per year and model (train predict); several checkpoints (--checkpoint "
    "repeated, e.g. the same recipe with other seeds) make an ensemble. Every pixel within "
    "the zone buffer of a reference glacier belongs to the nearest one, so touching glaciers "
    "are measured apart and a glacier that advances beyond its reference outline keeps its "
    "ice. A glacier's area in a year is the ensemble's mean predicted ice over the pixels with "
    "data, made ellipsoidal by its reference outline's ellipsoidal/planar ratio. A glacier "
    "seen over less than min_observed of its reference outline gets no area that year and the "
    "year is left out of its fit; a smaller unseen part is filled at the ice density of the "
    "part seen.")
_UNCERTAINTY = (
    "Each year's best area is the measured area less the bias of the area error model (train "
    "evaluate, on validation ground: the edges' mean outward displacement times the glacier's "
    "outline less its ice divides); its 1 sigma holds the level, common, year-to-year, "
    "unobserved (the unseen part of the reference outline, as ice or not with equal "
    "likelihood: its area / sqrt(12)), model (the ensemble's standard deviation; with --tta, "
    "half the difference between the areas at mean -/+ spread; empty when not estimated) and "
    "divide terms; the 90 % interval is best -/+ 1.645 sigma. Without an error model nothing "
    "is corrected and the buffer method (Paul et al. 2013: the outline's length, as pi/4 of "
    "its pixel staircase, times half a pixel) stands in for the level term; it is known to be "
    "too small. " + CORRELATION_MODEL)
_TOTAL = (
    "The total sums the glaciers' best areas; a glacier-year left out is filled with that "
    "glacier's fitted area and the fit's standard error there; a glacier seen in fewer than "
    "two years is left out of every year. Its terms follow the correlation model above.")


@dataclass(frozen=True)
class ChangeConfig:
    zone_buffer_m: float = ZONE_BUFFER_M
    id_field: str | None = None  # reference id field (default: glac_id, RGIId, ...)
    min_observed: float = MIN_OBSERVED


@dataclass
class YearAreas:
    """One year's prediction measured by zones: km^2 per glacier (index 0: outside zones)."""
    year: int
    prediction: Path
    km2: dict[str, np.ndarray]  # rule -> ellipsoidal km^2 per reference glacier
    observed: np.ndarray  # fraction of each reference glacier with data
    observed_all: float  # fraction of all the reference's glacier pixels with data
    outlines: dict[int, object]  # predicted ice per glacier (zone index -> polygon)
    bounds: str  # how low/high were made
    threshold: float  # the prediction's ice threshold
    reference_km2: np.ndarray  # each reference glacier's own area, seen or not (index 1..n)
    boundary_km2: np.ndarray  # the buffer method's area per glacier (index 1..n)
    edge_km: np.ndarray  # the predicted ice's outline less its divides, as a line (1..n)
    pixel_km2: float


@dataclass
class YearEstimate:
    """One year's areas per glacier (index 0..n-1) from one or several models, with what
    their uncertainty needs; NaN where the glacier was seen too little."""
    year: int
    area: np.ndarray
    sigma_ensemble: np.ndarray
    sigma_tta: np.ndarray  # the TTA part of the model term (NaN: not estimated, without --tta)
    sigma_unobserved: np.ndarray
    buffer_km2: np.ndarray  # the buffer method (Paul et al. 2013), where no error model is
    edge_km: np.ndarray
    observed: np.ndarray
    observed_all: float  # the share of all the reference's glacier pixels seen
    low: np.ndarray  # edge envelope (threshold -/+ margin, or the TTA spread)
    high: np.ndarray
    members: np.ndarray  # (models, glaciers): each ensemble member's area, filled alike


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
    from .predict import PredictConfig

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

    from .predict import checkpoint_tiles
    from .runtime import load_checkpoint

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

    from .predict import predict
    from .zoned import predict_zoned

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


def run_change(predictions: list[Path], workspace: Path, reference: Path | None = None,
               cfg: ChangeConfig = ChangeConfig(), name: str | None = None,
               force: bool = False, echo: Callable[[str], None] = print,
               ensemble: Sequence[Sequence[Path]] = (), wait: bool = False) -> Path:
    """Measure every prediction by the reference's zones (with `ensemble`, the predictions of
    further models of the same years); write change.csv, change.gpkg, change.png and
    change.json."""
    from .predict import reference_default
    from .zoned import zone_part, zoned_members, zoned_reference

    lists = [[Path(p) for p in ps] for ps in [predictions, *ensemble]]
    zones = zoned_members(lists)
    if zones is None:
        members = [_member(ps) for ps in lists]
        _check_ensemble(members)
        predictions, manifests = members[0]
    else:  # each zone checked as its own change; the zoned predictions in year order
        by_zone = {z: [_member([zone_part(p, z) for p in ps]) for ps in lists]
                   for z, _ in zones}
        for zone_members in by_zone.values():
            _check_ensemble(zone_members)
        members = [_zoned_member(ps) for ps in lists]
        predictions, manifests = members[0]
    reference = Path(reference) if reference else reference_default(predictions[0]) \
        if zones is None else zoned_reference(predictions[0])
    if not reference.is_file():
        raise InputError(f"{predictions[0]}: its export recorded no outlines; give "
                         "--reference FILE")
    out = _out_dir(Path(workspace), predictions[0], manifests[0], name)
    params = as_stored({"predictions": [stored_path(p, out, workspace) for p in predictions],
                        "completed": [m.get("completed_at") for m in manifests],
                        "reference": reference.name, "reference_sha256": file_sha256(reference),
                        "config": asdict(cfg)})
    if len(members) > 1:
        params["ensemble"] = as_stored([[stored_path(p, out, workspace) for p in ps]
                                        for ps, _ in members[1:]])
    # A zoned prediction's parts are predictions of the one model: the first zone's say it.
    model, source = ensemble_error_model(members if zones is None else by_zone[zones[0][0]],
                                         echo)
    params["error_model"] = source  # a model evaluated again since makes this change stale
    stage = Stage("change", out / CHANGE_FILES[0], names=CHANGE_OPTIONS)
    with stage.lock(wait, echo):
        if stage.decide(params, force, echo).action == DONE:
            return out
        if zones is None:
            ref = _reference(reference, predictions[0], cfg)
            per_year = [[measure_year(p, m, ref, cfg) for p, m in zip(*member)]
                        for member in members]
            write_change_map(out, predictions[0], predictions[-1])  # before change.json
        else:
            ref, per_year = _measure_zones(reference, by_zone, zones, cfg, out)
        estimates = [estimate_year(list(models), cfg.min_observed)
                     for models in zip(*per_year)]
        table, pooled = change_table(ref, estimates, SIGMA_FLOOR_KM2, model)
        _write(out, params, ref, per_year[0], table, manifests, len(members),
               {**pooled, "error_model_source": source}, echo)
    update_catalog(Path(workspace), echo)
    return out


def _zoned_member(predictions: list[Path]) -> tuple[list[Path], list[dict]]:
    """One model's zoned predictions in year order, with their zones.json manifests."""
    return _in_year_order(predictions, ZONES_MANIFEST, "zoned prediction")


def _in_year_order(predictions: list[Path], manifest: str, kind: str
                   ) -> tuple[list[Path], list[dict]]:
    """Complete predictions (of one zone or zoned) and their manifests, sorted by year."""
    manifests = [require_complete(Path(p) / manifest, kind, "finish it with `train predict`")
                 for p in predictions]
    order = np.argsort([m.get("year") or 0 for m in manifests])
    return [Path(predictions[i]) for i in order], [manifests[i] for i in order]


def _measure_zones(reference: Path, by_zone: dict, zones: list, cfg: ChangeConfig,
                   out: Path) -> tuple[Outlines, list[list[YearAreas]]]:
    """Every zone measured on its own strip, the zones' areas added up per year; the
    reference in EPSG:4326 (the merged outlines' CRS); a change map per zone."""
    from gee_export.common.zoned import OUTPUT_CRS

    from .zoned import merge_years

    refs = {z: _reference(reference, by_zone[z][0][0][0], cfg) for z, _ in zones}
    per_zone = {z: [[measure_year(p, m, refs[z], cfg, strip) for p, m in zip(*member)]
                    for member in by_zone[z]] for z, strip in zones}
    for z, _ in zones:
        first, last = by_zone[z][0][0][0], by_zone[z][0][0][-1]
        write_change_map(out, first, last, zone=z)  # before change.json
    strips = [strip for _, strip in zones]
    crs = [refs[z].frame.crs for z, _ in zones]
    per_year = [[merge_years([per_zone[z][i][k] for z, _ in zones], strips, crs)
                 for k in range(len(per_zone[zones[0][0]][i]))]
                for i in range(len(per_zone[zones[0][0]]))]
    ref = refs[zones[0][0]]
    return replace(ref, frame=ref.frame.to_crs(OUTPUT_CRS)), per_year


def _member(predictions: list[Path]) -> tuple[list[Path], list[dict]]:
    """One model's predictions in year order, with their manifests: one per year, two years
    or more, one grid, and made alike (same checkpoint and options)."""
    predictions, manifests = _in_year_order(predictions, PREDICTION_MANIFEST, "prediction")
    years = [m.get("year") for m in manifests]
    if None in years or len(set(years)) != len(years) or len(years) < 2:
        raise InputError(f"--predictions: a change needs one prediction per year, of two "
                         f"years or more; got years {years}")
    for p, m in zip(predictions[1:], manifests[1:]):
        if m.get("grid") != manifests[0].get("grid"):
            raise InputError(f"--predictions: {p} lies on another grid than {predictions[0]}; "
                             "a change compares one region's years on one grid")
        diff = _made_differently(manifests[0], m)
        if diff:
            raise InputError(f"--predictions: {p} was made otherwise than {predictions[0]} "
                             f"({diff}); a change compares years measured alike: remake it "
                             "with `train predict --force` and the same options")
    return predictions, manifests


def _check_ensemble(members: list[tuple[list[Path], list[dict]]]) -> None:
    """The members of an ensemble: the same years, made with the same options by different
    checkpoints."""
    (first, fm), *rest = members
    years = [m.get("year") for m in fm]
    seen: dict[str, Path] = {fm[0]["parameters"].get("checkpoint_sha256"): first[0]}
    for ps, ms in rest:
        if [m.get("year") for m in ms] != years:
            raise InputError(f"--checkpoint: {ps[0].parent} has predictions of years "
                             f"{[m.get('year') for m in ms]}, the first model of {years}")
        recipe = [(key, _recipe(fm[0])[key], _recipe(ms[0])[key]) for key in ("bands", "tiles")]
        diff = ", ".join(filter(None, [_made_differently(fm[0], ms[0], checkpoint=False)] +
                                [f"{key}: {a} -> {b}" for key, a, b in recipe if a != b]))
        if diff:
            raise InputError(f"--checkpoint: {ps[0]} was made otherwise than {first[0]} "
                             f"({diff}); an ensemble's members differ in their weights only "
                             "(the same recipe and tiles, another --seed)")
        sha = ms[0]["parameters"].get("checkpoint_sha256")
        if sha in seen:
            raise InputError(f"--checkpoint: {ps[0]} and {seen[sha]} come from the same "
                             "checkpoint; an ensemble needs different ones")
        seen[sha] = ps[0]


def _recipe(prediction: dict) -> dict:
    """What an ensemble's members must share beyond the prediction options: the bands the
    model reads and the tile set it trained on."""
    return {"bands": prediction.get("bands"),
            "tiles": (prediction.get("trained_on") or {}).get("tiles_id")}


def _made_differently(a: dict, b: dict, checkpoint: bool = True) -> str:
    """The options in which two predictions differ, as the stage contract names them
    (`option: old -> new`; the checkpoint by content); '' when made alike. Where they lie
    and when they were made may differ, and so may the options that do not change a result
    (--device, --batch-size)."""
    from .predict import PREDICTION_OPTIONS

    pa, pb = a.get("parameters") or {}, b.get("parameters") or {}
    out = [f"--checkpoint: {pa.get('checkpoint')} -> {pb.get('checkpoint')} (other weights)"
           ] if checkpoint and pa.get("checkpoint_sha256") != pb.get("checkpoint_sha256") else []
    ignore = ("export", "export_completed_at", "checkpoint", "checkpoint_sha256",
              "config.device", "config.batch_size")
    return ", ".join(out + differences(pa, pb, PREDICTION_OPTIONS, ignore))


# train change's parameters as its options (the stage contract names differences so).
CHANGE_OPTIONS = {"predictions": "--predictions", "completed": "--predictions (remade since)",
                  "reference": "--reference", "reference_sha256": "--reference (contents)",
                  "ensemble": "--checkpoint (further models)",
                  "config.zone_buffer_m": "--zone-buffer", "config.id_field": "--id-field",
                  "config.min_observed": "--min-observed",
                  "error_model": "the area error model (train evaluate, made since)"}


def _out_dir(workspace: Path, first: Path, manifest: dict, name: str | None) -> Path:
    check_name(name, "--name")
    run = first.resolve().parent.name
    return workspace / PREDICTIONS_DIR / run / (name or f"{manifest.get('region')}-change")


def _reference(reference: Path, prediction: Path, cfg: ChangeConfig):
    import rasterio

    from gee_export.common.outlines import read_outlines

    with rasterio.open(prediction / PROBABILITY_TIF) as src:
        return read_outlines(reference, src.crs.to_string(), cfg.id_field)


def measure_year(prediction: Path, manifest: dict, ref: Outlines, cfg: ChangeConfig,
                 strip: Strip | None = None) -> YearAreas:
    """One pass over a prediction: per-glacier areas (ice, low, high) and ice outlines. With
    `strip` (a zone of a zoned prediction), only the pixels of that strip count."""
    import rasterio

    from .zones import GlacierPieces, zone_blocks, zones_of

    threshold = manifest["parameters"]["config"]["threshold"]
    with rasterio.open(prediction / PROBABILITY_TIF) as src:
        zones = zones_of(src, ref.geometries, cfg.zone_buffer_m, strip)
        counts = ZoneCounts(len(ref))
        pieces = GlacierPieces()
        tta = src.count >= 2
        for b in zone_blocks(src, zones, (1, 2) if tta else (1,)):
            p = np.nan_to_num(b.probability[0], nan=0.0)
            spread = b.probability[1] if tta else BOUNDS_MARGIN
            ice = {"ice": p >= threshold, "low": p - spread >= threshold,
                   "high": (p + spread >= threshold) & b.valid}
            counts.add_block(b, ice)
            pieces.add(np.where(ice["ice"], b.zone, 0), b.transform)
        px = abs(src.res[0] * src.res[1]) / 1e6
    ratio = ellipsoidal_ratios(ref)
    km2 = {rule: counts.km2(rule, px, ratio) for rule in RULES}
    observed = counts.reference / np.maximum(counts.reference_all, 1)
    observed_all = counts.reference[1:].sum() / max(counts.reference_all[1:].sum(), 1)
    outlines = pieces.dissolved()
    return YearAreas(manifest["year"], prediction, km2, observed[1:], float(observed_all),
                     outlines, "tta spread" if tta else f"threshold +- {BOUNDS_MARGIN}",
                     threshold, counts.reference_all[1:] * px * ratio[1:],
                     boundary_km2(outlines, len(ref), math.sqrt(px), ratio[1:]),
                     edge_km(outlines, len(ref), ratio[1:]), px)


# Islands and holes of predicted ice under this area are speckle, not glacier margins: their
# pixel edges would take a bias per km of outline that the error model fitted on margins.
SPECKLE_KM2 = MIN_GLACIER_AREA_KM2 / 10


def edge_km(outlines: dict[int, object], n: int, ratio: np.ndarray) -> np.ndarray:
    """Per glacier, the outline of its predicted ice (islands and holes under SPECKLE_KM2
    left out) less the stretches it shares with a neighbour's (ice divides, which no image
    shows), as the smooth line its pixel staircase follows (pi/4 of it), in km, ellipsoidal
    like the areas."""
    import shapely

    from .area_error import divide_free_boundaries

    keys = [k for k in sorted(outlines) if 1 <= k <= n]
    margins = [_without_speckle(outlines[k], SPECKLE_KM2 * 1e6 / ratio[k - 1]) for k in keys]
    lines = divide_free_boundaries(margins)
    out = np.zeros(n)
    for k, line in zip(keys, lines):
        out[k - 1] = shapely.length(line) / 1e3 * STAIRCASE_TO_LINE * math.sqrt(ratio[k - 1])
    return out


def _without_speckle(geom, min_m2: float):
    """The parts and holes of a (multi)polygon of at least min_m2 (planar m^2)."""
    import shapely
    from shapely.geometry import Polygon

    parts = [Polygon(p.exterior, [h for h in p.interiors if Polygon(h).area >= min_m2])
             for p in shapely.get_parts(geom) if p.area >= min_m2]
    return shapely.union_all(parts) if parts else Polygon()


def boundary_km2(outlines: dict[int, object], n: int, pixel_km: float,
                 ratio: np.ndarray) -> np.ndarray:
    """The buffer method per glacier (Paul et al. 2013): the length of its predicted outline,
    taken as pi/4 of the pixel staircase, times half a pixel; ellipsoidal like the areas."""
    import shapely

    length_km = np.zeros(n)
    for k, geom in outlines.items():
        if 1 <= k <= n:
            length_km[k - 1] = shapely.length(geom) / 1e3
    return length_km * STAIRCASE_TO_LINE * pixel_km / 2 * ratio


def slope(years: np.ndarray, areas: np.ndarray) -> float:
    """Least-squares slope of area against year."""
    t = years - years.mean()
    return float((t * (areas - areas.mean())).sum() / (t * t).sum())


def slope_bounds(years: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[float, float]:
    """The smallest and largest least-squares slopes of a series within [low, high] each
    year: the slope is sum(w_i a_i) with w_i = (t_i - mean t) / sum (t - mean t)^2, so the
    extremes put each year at the end its weight's sign calls for."""
    t = years - years.mean()
    w = t / (t * t).sum()
    return (float((w * np.where(w > 0, low, high)).sum()),
            float((w * np.where(w > 0, high, low)).sum()))


def estimate_year(members: list[YearAreas], min_observed: float) -> YearEstimate:
    """One year's areas per glacier from the members of an ensemble (one measurement per
    model; the scene, and so what is seen, is the same for all)."""
    first = members[0]
    seen = first.observed * first.reference_km2
    unseen = (1 - first.observed) * first.reference_km2
    keep = np.where(first.observed >= min_observed, 1.0, np.nan)

    def filled(a: np.ndarray) -> np.ndarray:  # the unseen part at the seen part's density
        density = np.clip(np.divide(a, seen, out=np.zeros_like(a), where=seen > 0), 0, 1)
        return (a + unseen * density) * keep

    each = np.array([filled(m.km2["ice"][1:]) for m in members])
    sigma_ens = each.std(axis=0, ddof=1) if len(members) > 1 else np.full(len(seen), np.nan)
    sigma_tta = np.full(len(seen), np.nan)  # not estimated without --tta
    if first.bounds == "tta spread":  # half the distance between mean -/+ spread, averaged
        sigma_tta = np.mean([(m.km2["high"][1:] - m.km2["low"][1:]) / 2 for m in members],
                            axis=0) * keep
    mean = lambda rule: filled(np.mean([m.km2[rule][1:] for m in members], axis=0))  # noqa
    area = each.mean(axis=0)
    boundary = np.mean([m.boundary_km2 for m in members], axis=0)
    boundary = np.where(area == 0, np.maximum(boundary, DETECTION_LIMIT_KM2), boundary)
    edge = np.mean([m.edge_km for m in members], axis=0)
    return YearEstimate(first.year, area, sigma_ens * keep, sigma_tta,
                        unseen * UNIFORM_SIGMA * keep,
                        boundary * keep, edge * keep, first.observed, first.observed_all,
                        mean("low"), mean("high"), each)


def change_table(ref: Outlines, estimates: list[YearEstimate], sigma_floor: float,
                 model: AreaErrorModel | None = None) -> tuple[list[dict], dict]:
    """One row per reference glacier, then the total (outside zones not included): each
    year's measured and best area with its 1-sigma terms and 90 % interval, the rate with
    its terms, interval and significance, the edge envelope, the years used; and what the
    uncertainty pooled (change.json's `uncertainty`)."""
    s = _series(ref, estimates)
    years, lv = s.years, levels(s, model)
    best = lv.best(s.area)
    known = np.hypot(np.nan_to_num(s.sigma_unobserved),
                     np.where(best == 0, DETECTION_LIMIT_KM2, 0.0))
    # The scatter is pooled over glaciers above the size limit in every year seen: one that
    # vanishes shrinks far from a line, and its years say nothing of the mapping's noise.
    steady = np.all(~np.isfinite(best) | (best >= MIN_GLACIER_AREA_KM2), axis=1)
    sigma_eta, dof = pooled_year_sigma(years, best, known, steady, sigma_floor)
    # Two years of each glacier leave no scatter to pool: the buffer method stands in.
    sigma_year = np.hypot(sigma_eta if dof else np.nan_to_num(s.buffer_km2), known)
    fits = with_divides([glacier_rate(years, best, sigma_year, s, lv, i, model, dof,
                                      sigma_floor) for i in range(len(best))], s)
    sigma = area_sigma(lv, sigma_year, s)
    low, high = np.minimum(s.area, _stack(estimates, "low")), \
        np.maximum(s.area, _stack(estimates, "high"))
    observed = _stack(estimates, "observed")
    rows = [_row(gid, years, s.area[i], best[i], sigma[i], _glacier_terms(lv, sigma_year, s, i),
                 lv.bias[i], low[i], high[i], observed[i], fits[i])
            for i, gid in enumerate(ref.ids)]
    rows.append(_total_row(years, best, sigma_year, lv, s, fits, model, dof, sigma_floor,
                           low, high, np.array([e.observed_all for e in estimates]),
                           list(ref.ids)))
    pooled = {"year_sigma_km2": sigma_eta if dof else None, "dof": dof,
              "glaciers_pooled": int(sum(np.isfinite(best[i]).sum() >= 3
                                         for i in np.flatnonzero(steady))),
              "quantile90": t90(dof), "bias_corrected": lv.corrected,
              "error_model": model.to_dict() if model else None}
    return rows, pooled


def _stack(estimates: list[YearEstimate], attr: str) -> np.ndarray:
    return np.array([getattr(e, attr) for e in estimates]).T


def _series(ref: Outlines, estimates: list[YearEstimate]) -> Series:
    from .area_error import shared_divides

    tta = _stack(estimates, "sigma_tta")
    ens = _stack(estimates, "sigma_ensemble")
    model = np.where(np.isnan(ens) & np.isnan(tta), np.nan,
                     np.hypot(np.nan_to_num(ens), np.nan_to_num(tta)))
    divide_km, outline_km = shared_divides(ref.geometries)
    return Series(np.array([e.year for e in estimates], float), _stack(estimates, "area"),
                  _stack(estimates, "edge_km"), divide_km, outline_km,
                  ref.frame["area_km2"].to_numpy(float),
                  _stack(estimates, "sigma_unobserved"), model, tta,
                  np.array([e.members for e in estimates]).transpose(1, 2, 0),
                  _stack(estimates, "buffer_km2"), _stack(estimates, "low"),
                  _stack(estimates, "high"))


def _glacier_terms(lv: Levels, sigma_year: np.ndarray, s: Series, i: int) -> dict:
    eta = np.sqrt(np.maximum(sigma_year[i] ** 2 - np.nan_to_num(s.sigma_unobserved[i]) ** 2, 0))
    return {"level": lv.level[i], "common": lv.common[i], "year": eta,
            "unobserved": s.sigma_unobserved[i], "model": s.sigma_model[i],
            "divide": lv.divide[i]}


def _total_row(years: np.ndarray, best: np.ndarray, sigma_year: np.ndarray, lv: Levels,
               s: Series, fits: list, model, dof: int, floor: float, low: np.ndarray,
               high: np.ndarray, observed: np.ndarray, ids: list[str]) -> dict:
    """The sum over glaciers (uncertainty.total); its envelope sums the glaciers' where
    seen and their fills elsewhere."""
    tot = total(years, best, sigma_year, lv, s, fits, model, dof, floor)
    seen = np.isfinite(s.area[tot.keep])
    envelope = lambda a: np.where(seen, a[tot.keep], tot.each).sum(0)  # noqa: E731
    bias = np.where(seen, lv.bias[tot.keep], 0.0).sum(0)
    row = _row("total", years, tot.area + bias, tot.area, tot.sigma, tot.terms, bias,
               envelope(low), envelope(high), observed, tot.fit)
    notes = [f"{int(y)}: {int(n)} glacier(s) from their fits" for y, n in zip(years, tot.filled)
             if n]
    if tot.left_out:
        notes.append(f"leaves out {', '.join(ids[i] for i in tot.left_out)} (seen in fewer "
                     "than two years)")
    row["flags"] = "; ".join(notes)
    return row


def _row(gid: str, years: np.ndarray, area: np.ndarray, best: np.ndarray, sigma: np.ndarray,
         terms: dict[str, np.ndarray], bias: np.ndarray, low: np.ndarray, high: np.ndarray,
         observed: np.ndarray, fit: RateFit | None) -> dict:
    ok = np.isfinite(area)
    num = lambda v: None if v is None or not np.isfinite(v) else float(v)  # noqa: E731
    y = [int(t) for t in years]
    q = Z90  # areas: the normal's (the level model's sds are estimates of many pieces)
    row: dict = {"glacier_id": gid}
    row.update({f"area_km2_{t}": num(round(float(a), 6)) for t, a in zip(y, area)})
    row.update({f"area_best_km2_{t}": num(round(float(a), 6)) for t, a in zip(y, best)})
    row.update({f"area_sigma_km2_{t}": num(v) for t, v in zip(y, sigma)})
    row.update({f"area_ci90_low_{t}": num(max(a - q * v, 0.0)) for t, a, v in zip(y, best, sigma)})
    row.update({f"area_ci90_high_{t}": num(a + q * v) for t, a, v in zip(y, best, sigma)})
    row.update({f"bias_km2_{t}": num(b) if k else None for t, b, k in zip(y, bias, ok)})
    for name, term in terms.items():
        row.update({f"sigma_{name}_{t}": num(v) if k else None
                    for t, v, k in zip(y, term, ok)})
    row.update({f"observed_{t}": round(float(o), 4) for t, o in zip(y, observed)})
    row.update(_rate_columns(fit, best[ok][0] if ok.any() else np.nan))
    edge = slope_bounds(years[ok], low[ok], high[ok]) if ok.sum() >= 2 else (None, None)
    row.update({
        "rate_edge_low": num(edge[0]), "rate_edge_high": num(edge[1]),
        "years_used": ";".join(str(int(t)) for t in years[ok]),
        "observed_min": float(np.min(observed)),
        "flags": "; ".join(f"{int(t)}: seen over {math.floor(1000 * o) / 10:g} % only, left "
                           "out" for t, o, k in zip(years, observed, ok) if not k)})
    return row


RATE_TERMS = ("year", "threshold", "drift", "divide", "ensemble")


def _rate_columns(fit: RateFit | None, first: float) -> dict:
    """The rate in km^2/yr and in % of the first year's best area a year, each with its 1
    sigma and 90 % interval; whether that interval excludes zero; the terms of its sigma
    (empty where a term was not estimated)."""
    num = lambda v: None if v is None or not np.isfinite(v) else float(v)  # noqa: E731
    if fit is None:
        keys = ["rate_km2_per_year", "rate_se_km2_per_year", "rate_ci90_low", "rate_ci90_high",
                "rate_percent_per_year", "rate_percent_se", "rate_percent_ci90_low",
                "rate_percent_ci90_high", "significant", "rate_dof",
                *(f"rate_se_{k}_km2_per_year" for k in RATE_TERMS)]
        return dict.fromkeys(keys)
    lo, hi = fit.ci90
    pct = 100 / first if first > 0 else math.nan
    terms = {"year": fit.se_year, **fit.terms}
    return {"rate_km2_per_year": num(fit.rate), "rate_se_km2_per_year": num(fit.se),
            "rate_ci90_low": num(lo), "rate_ci90_high": num(hi),
            "rate_percent_per_year": num(fit.rate * pct), "rate_percent_se": num(fit.se * pct),
            "rate_percent_ci90_low": num(lo * pct), "rate_percent_ci90_high": num(hi * pct),
            "significant": bool(lo > 0 or hi < 0), "rate_dof": fit.dof,
            **{f"rate_se_{k}_km2_per_year": num(terms.get(k)) for k in RATE_TERMS}}


def _write(out: Path, params: dict, ref, per_year: list[YearAreas], table: list[dict],
           manifests: list[dict], models: int, pooled: dict, echo) -> None:
    from .plots import change_png

    manifest_name, csv_name, gpkg_name, png_name = CHANGE_FILES
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, list(table[0]))
    w.writeheader()
    w.writerows(table)
    write_bytes(out / csv_name, buf.getvalue().encode())
    _write_outlines(out / gpkg_name, ref, per_year)
    change_png(out / png_name, ref, per_year, table)
    total = table[-1]
    tta = per_year[0].bounds == "tta spread"
    model_term = " and ".join(filter(None, [f"ensemble of {models} checkpoints" if models > 1
                                            else "", "TTA spread" if tta else ""]))
    write_json(out / manifest_name, base_manifest(
        "change", parameters=params, complete=True, completed_at=now_iso(),
        years=[y.year for y in per_year], glaciers=len(ref), models=models, total=total,
        imagery=imagery(per_year, manifests), uncertainty=pooled,
        truth_check=truth_check(table, per_year, manifests),
        method={"areas": _METHOD, "uncertainty": _UNCERTAINTY, "rate": RATE_METHOD,
                "total": _TOTAL, "correlation_model": CORRELATION_MODEL,
                "model_term": model_term or "not estimated: one checkpoint without --tta "
                                            "(repeat --checkpoint with other seeds, or add "
                                            "--tta); its columns are empty",
                "min_observed": params["config"]["min_observed"],
                "edge_envelope": f"rate_edge_low/high: the extreme least-squares slopes within "
                                 f"each year's areas at {per_year[0].bounds} (a sensitivity "
                                 "to the ice edge, not a confidence interval)"}))
    _say_total(out, total, per_year, table, pooled, echo)


def _say_total(out: Path, total: dict, per_year: list[YearAreas], table: list[dict],
               pooled: dict, echo) -> None:
    lo, hi = total["rate_ci90_low"], total["rate_ci90_high"]
    flagged = [r["glacier_id"] for r in table[:-1] if r["flags"]]
    significant = sum(bool(r["significant"]) for r in table[:-1])
    rated = sum(r["rate_km2_per_year"] is not None for r in table[:-1])
    echo(f"change complete: {out} (total {_signed(total['rate_km2_per_year'])} km^2/yr, 90 % "
         f"interval [{_signed(lo)}, {_signed(hi)}], over {per_year[0].year}-"
         f"{per_year[-1].year}; {significant} of {rated} glaciers change significantly"
         + ("" if pooled["bias_corrected"] else "; areas NOT bias-corrected (no error model)")
         + (f"; years left out for {', '.join(flagged)} (seen too little, see flags)"
            if flagged else "") + ")")


def find_error_model(prediction: Path, manifest: dict) -> tuple[AreaErrorModel | None, str]:
    """The area error model of the model that made `prediction`: from an evaluation beside
    the run's predictions (train evaluate on the scene its tiles were cut from) of a
    prediction made alike (the same checkpoint, by content, and the same options: threshold,
    TTA, window...) and not remade since it was evaluated; the most recent of them."""
    import json

    found = []
    for path in sorted(Path(prediction).resolve().parent.glob("*/*.json")):
        try:
            report = json.loads(path.read_text())
            evaluated = json.loads((path.parent / PREDICTION_MANIFEST).read_text())
        except (OSError, ValueError):
            continue
        fitted = report.get("area_error_model") if isinstance(report, dict) else None
        if report.get("kind") == "evaluation" and fitted and fitted.get("fitted", True) and \
                (report.get("parameters") or {}).get("prediction_completed_at") == \
                evaluated.get("completed_at") and not _made_differently(manifest, evaluated):
            found.append((str(report.get("evaluated_at")), path, fitted))
    if not found:
        return None, "none found: buffer method, not corrected"
    when, path, fitted = max(found, key=lambda f: f[:2])
    return AreaErrorModel.from_dict(fitted), f"{path.parent.name}/{path.name} ({when})"


def ensemble_error_model(members: list[tuple[list[Path], list[dict]]],
                         echo: Callable[[str], None]) -> tuple[AreaErrorModel | None, str]:
    """Every member's own error model, their mean for the ensemble's mean areas (their
    offsets and variances averaged, the offset's error of their mean); none unless every
    member has one, said in one line."""
    found = [find_error_model(ps[0], ms[0]) for ps, ms in members]
    if any(m is None for m, _ in found):
        missing = [str(ps[0]) for (ps, _), (m, _) in zip(members, found) if m is None]
        echo("note: no area error model for " + ", ".join(missing) + " (make one with `train "
             "evaluate` on the prediction of the scene its model's tiles were cut from, then "
             "rerun with --force): areas are not corrected and their uncertainty falls back "
             "to the buffer method, which is known to be too small")
        return None, "none found: buffer method, not corrected"
    models = [m for m, _ in found]
    mean = lambda k: float(np.mean([getattr(m, k) for m in models]))  # noqa: E731
    se = math.sqrt(sum(m.offset_se_km ** 2 for m in models)) / len(models)
    return (AreaErrorModel(mean("offset_km"), se, mean("var_per_km"), mean("var_per_km2"),
                           sum(m.pieces for m in models), mean("length_km"), models[0].threshold),
            "; ".join(source for _, source in found))


def imagery(per_year: list[YearAreas], manifests: list[dict]) -> list[dict]:
    """Each year's imagery as its export recorded it: the windows (dates) of each sensor,
    the sensors and the pixel size."""
    out = []
    for y, m in zip(per_year, manifests):
        exp = {}
        if m.get("export") and m.get("kind") == "prediction":
            try:
                exp = read_manifest(resolved_path(m["export"], y.prediction), "export")
            except (InputError, OSError):
                exp = {}
        recipe = (exp.get("parameters") or {}).get("recipe") or exp.get("recipe") or {}
        out.append({"year": y.year, "pixel_m": round(math.sqrt(y.pixel_km2) * 1e3, 6),
                    "sentinel1_dates": recipe.get("s1_dates"),
                    "sentinel2_dates": recipe.get("s2_dates"),
                    "dates_note": "[first day, day after the last)",
                    "sentinel2_collection": recipe.get("s2_collection"),
                    "sensors": ["Sentinel-1 GRD (VV, VH)", "Sentinel-2 "
                                f"{str(recipe.get('s2_level', '')).upper()}",
                                "DEM (HMA mosaic, SRTM fallback)"] if recipe else None,
                    "source": exp.get("source")})
    return out


def _signed(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.3f}"


def _write_outlines(path: Path, ref, per_year: list[YearAreas]) -> None:
    import geopandas as gpd

    from gee_export.common.outlines import ellipsoidal_area_km2
    from gee_export.common.vectors import write_gpkg

    rows, geoms = [], []
    for y in per_year:
        for k in sorted(y.outlines):
            rows.append({"glacier_id": ref.ids[k - 1], "year": y.year})
            geoms.append(y.outlines[k])
    crs = ref.frame.crs
    frame = gpd.GeoDataFrame(rows, geometry=geoms, crs=crs) if rows else gpd.GeoDataFrame(
        {"glacier_id": [], "year": []}, geometry=[], crs=crs)
    frame["area_km2"] = ellipsoidal_area_km2(frame.geometry.values, crs) if rows else []
    write_gpkg(frame, path, "outlines")


def _true_rate(years: np.ndarray, truth: np.ndarray, row: dict) -> float:
    """What the rate estimates, on the true areas: the same weighted fit over the same years
    (a glacier that vanishes shrinks far from a straight line, so the weights matter)."""
    used = np.array([np.nan if row[f"area_km2_{int(y)}"] is None else 1.0 for y in years])
    sigma = np.array([math.hypot(row[f"sigma_year_{int(y)}"] or 0.0,
                                 row[f"sigma_unobserved_{int(y)}"] or 0.0) for y in years])
    fit = wls_rate(years, truth * used, sigma, SIGMA_FLOOR_KM2)
    return fit.rate if fit else slope(years, truth)


def truth_check(table: list[dict], per_year: list[YearAreas], manifests: list[dict]) -> dict:
    """Against the demo's known areas (export.json synthetic_truth), when every year has
    them: total change, signs of glaciers over 1 km^2, and how often the true rate lies in
    the 90 % interval (glaciers over COVERAGE_MIN_KM2) and in the edge envelope."""
    truths = []
    for y, m in zip(per_year, manifests):
        if "export" not in m or m.get("kind") != "prediction":  # none recorded, or zoned
            return {}
        exp = read_manifest(resolved_path(m["export"], y.prediction), "export")
        truth = (exp.get("synthetic_truth") or {}).get("glacier_area_km2")
        if not truth:
            return {}
        truths.append(truth)
    years = np.array([y.year for y in per_year], float)
    rows = {r["glacier_id"]: r for r in table}
    ids = [g for g in truths[0] if g in rows]
    true_rate = {g: _true_rate(years, np.array([t.get(g, 0.0) for t in truths]), rows[g])
                 for g in ids}
    first, last = int(years[0]), int(years[-1])
    both = [g for g in ids if rows[g][f"area_km2_{first}"] is not None
            and rows[g][f"area_km2_{last}"] is not None]  # seen well in both end years
    est = sum(rows[g][f"area_best_km2_{last}"] - rows[g][f"area_best_km2_{first}"] for g in both)
    true = sum(truths[-1].get(g, 0.0) - truths[0].get(g, 0.0) for g in both)
    large = [g for g in ids if truths[0].get(g, 0.0) > 1.0]
    judged = [g for g in ids if truths[0].get(g, 0.0) > COVERAGE_MIN_KM2
              and rows[g]["rate_ci90_low"] is not None]
    inside = lambda g, lo, hi: rows[g][lo] is not None and \
        rows[g][lo] - 1e-9 <= true_rate[g] <= rows[g][hi] + 1e-9  # noqa: E731
    covered = [g for g in judged if inside(g, "rate_ci90_low", "rate_ci90_high")]
    plain = {g: slope(years, np.array([t.get(g, 0.0) for t in truths])) for g in judged}
    covered_plain = [g for g in judged if rows[g]["rate_ci90_low"] - 1e-9 <= plain[g] <=
                     rows[g]["rate_ci90_high"] + 1e-9]
    return {**_area_coverage(rows, truths, years, judged), **_total_coverage(rows, truths, years),
            "total_change_km2": est, "true_total_change_km2": true,
            "total_change_error": (est - true) / true if true else None,
            "total_change_glaciers": len(both),
            "large_glaciers": len(large),
            "large_sign_right": sum(np.sign(rows[g]["rate_km2_per_year"] or 0) ==
                                    np.sign(true_rate[g]) for g in large),
            "coverage90": len(covered) / len(judged) if judged else None,
            "coverage90_glaciers": len(judged),
            "coverage90_missed": sorted(set(judged) - set(covered)),
            # Against the plain least-squares rate of the true areas over every year (the
            # estimand above uses our weights and years, so it moves with the estimator).
            "coverage90_unweighted_truth": (len(covered_plain) / len(judged) if judged
                                            else None),
            "sharpness_mean_abs_error_over_se": (float(np.mean([
                abs(rows[g]["rate_km2_per_year"] - true_rate[g]) / rows[g]["rate_se_km2_per_year"]
                for g in judged])) if judged else None),
            "true_rate_km2_per_year": {g: true_rate[g] for g in judged},
            "truth_inside_edge_envelope": sum(inside(g, "rate_edge_low", "rate_edge_high")
                                              for g in ids),
            "glaciers": len(ids),
            "flagged": [{"glacier_id": g, "flags": rows[g]["flags"]} for g in ids
                        if rows[g]["flags"]]}


def _area_coverage(rows: dict, truths: list[dict], years: np.ndarray, judged: list[str]) -> dict:
    """How often a judged glacier's true area lies in its year's 90 % interval."""
    hits = [rows[g][f"area_ci90_low_{int(y)}"] - 1e-9 <= t.get(g, 0.0) <=
            rows[g][f"area_ci90_high_{int(y)}"] + 1e-9
            for g in judged for y, t in zip(years, truths)
            if rows[g][f"area_ci90_low_{int(y)}"] is not None]
    return {"area_coverage90": float(np.mean(hits)) if hits else None,
            "area_coverage90_glacier_years": len(hits)}


def _total_coverage(rows: dict, truths: list[dict], years: np.ndarray) -> dict:
    """The total's rate against the true total's (the glaciers in the table, over every year:
    the total fills the years a glacier was not seen)."""
    total = rows["total"]
    if total["rate_ci90_low"] is None:
        return {}
    true = slope(years, np.array([sum(v for g, v in t.items() if g in rows) for t in truths]))
    return {"total_rate_true_km2_per_year": true,
            "total_rate_covered": bool(total["rate_ci90_low"] <= true <= total["rate_ci90_high"])}
