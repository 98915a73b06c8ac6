"""`train run`, `predict`, `evaluate`, `compare`, `models`: thin commands over the library."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import click

from gee_export.common.cli import (
    CONTEXT,
    AutoInt,
    Device,
    FiniteFloat,
    Name,
    force_option,
    multiple_of,
    option_group,
    quiet_option,
    user_errors,
    wait_option,
    workspace_option,
)
from gee_export.common.errors import InputError
from gee_export.common.layout import (
    TRUTH_OUTLINES_FILE,
    WORKSPACE_ENV,
    newest_complete,
    resolve_workspace,
    workspace_of,
)
from gee_export.common.outlines import MIN_GLACIER_AREA_KM2
from gee_export.common.zoned import zoned_parts

from .trainer import TrainConfig
from .zones import ZONE_BUFFER_M

tiles_option = click.option(
    "--tiles", type=click.Path(path_type=Path), default=None,
    help="Tile directory. [default: the newest complete tiles in the workspace]")
device_option = click.option("--device", type=Device(), default="auto",
                             help="auto (CUDA if present), cpu, cuda, cuda:N.")
amp_option = click.option(
    "--amp", is_flag=True,
    help="bf16 autocast on GPU (fp16 where bf16 is missing): about a third less GPU memory. "
         "Off by default: on an H200 the paper model ran 0.74-0.93x as fast with it as in "
         "fp32 with TF32 matrix products (benchmarks/bench_train.py).")


def _check_model(ctx, param, value: str) -> str:
    from .models import resolve

    try:
        resolve(value)
    except InputError as e:
        raise click.BadParameter(f"{value!r}: {str(e).split(': ', 1)[-1]}") from None
    return value


def _check_bands(ctx, param, value: str) -> str:
    from gee_export.common.bands import parse_bands

    try:
        parse_bands(value)
    except InputError as e:
        raise click.BadParameter(str(e).split(": ", 1)[-1]) from None
    return value.upper()


model_option = click.option(
    "--model", default="lgt-unet", callback=_check_model,
    help="Model name: lgt-unet (the paper's), a baseline or an ablation; `train models` lists "
         "them.")
preset_option = click.option(
    "--preset", type=click.Choice(["paper", "paper-b", "paper-l", "tiny"]), default="paper",
    help="Model size: paper (the text's widths 64-512 = Twins-SVT-S, 24.1 M for lgt-unet), "
         "paper-b (Twins-SVT-B) and paper-l (Twins-SVT-L, 105.7 M, near the paper's Table 3 "
         "107.5 M) for lgt-unet only, tiny (every model, 1-3 M, for CPUs).")
bands_option = click.option(
    "--bands", default="ABCD", callback=_check_bands,
    help="Band groups: A radar, B optical, C indices, D elevation; any subset such as AB.")
lr_option = click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=1e-4,
                         help="AdamW learning rate (paper: 1e-4), decayed by a cosine "
                              "schedule to 0.")
batch_option = click.option("--batch-size", type=click.IntRange(min=1), default=4,
                            help="Tiles per (global) batch (paper: 4); under torchrun it is "
                                 "shared among the processes.")
workers_option = click.option(
    "--workers", type=AutoInt(minimum=0, processes=True), default="auto",
    help="Loader processes per training process; auto: on CUDA the CPUs available (up to 8 "
         "per process), on CPU none (the model already uses every core).")
zone_buffer_option = click.option(
    "--zone-buffer", type=FiniteFloat(min=0), default=ZONE_BUFFER_M,
    help="Predicted ice within this distance (m) of a reference glacier counts for the nearest "
         "one.")


def stage_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """How a command that makes a product runs: --force, --wait, --quiet and --workspace."""
    return option_group(force_option, wait_option, quiet_option, workspace_option)(fn)


@click.command(context_settings=CONTEXT)
@tiles_option
@model_option
@preset_option
@bands_option
@click.option("--epochs", type=click.IntRange(min=1), default=100, help="Training epochs.")
@batch_option
@lr_option
@click.option("--weight-decay", type=FiniteFloat(min=0), default=0.01,
              help="AdamW weight decay.")
@click.option("--seed", type=click.IntRange(min=0), default=0,
              help="Seed of weights, order and augmentation.")
@click.option("--init", "init", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              multiple=True, help="Start from published weights (repeatable): Twins-SVT "
              "(timm key names) for lgt-unet, ResNet-18/50 (torchvision key names) for the "
              "DeepLab baselines and lgt-unet-cnn-decoder; .safetensors or a torch state dict. "
              "A first convolution with one input channel per band is loaded as is, one with 3 "
              "(RGB) adapted to the bands.")
@device_option
@amp_option
@click.option("--deterministic", is_flag=True,
              help="Deterministic algorithms only (every operation, cuDNN, cuBLAS), so that a "
                   "GPU run and its resumption repeat bit for bit; an operation that has none "
                   "stops the run, naming it. No measurable cost on a CPU (see the README).")
@click.option("--no-augment", is_flag=True, help="Disable the 8 rotations/flips.")
@workers_option
@click.option("--name", type=Name(), default=None,
              help="Run name. [default: TILES-MODEL-PRESET-BANDS]")
@click.option("--resume", is_flag=True, help="Only continue an interrupted run (the same "
              "command without it continues one too, or starts it).")
@wait_option
@quiet_option
@workspace_option
@user_errors
def run(tiles: Path | None, model: str, preset: str, bands: str, epochs: int, batch_size: int,
        lr: float, weight_decay: float, seed: int, init: tuple[Path, ...], device: str,
        amp: bool, deterministic: bool, no_augment: bool, workers: int | str,
        name: str | None, resume: bool, wait: bool, quiet: bool,
        workspace: Path | None) -> None:
    """Train a model on tiles; writes config.json, metrics.csv, curves.png, samples.png,
    best.pt and last.pt. Several GPUs: torchrun --nproc_per_node N $(which train) run ..."""
    from .trainer import train as run_training

    ws = resolve_workspace(workspace)
    tiles = Path(tiles) if tiles else newest_complete(ws, "tiles", "--tiles", click.echo)
    cfg = TrainConfig(model=model, preset=preset, bands=bands, epochs=epochs,
                      batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed,
                      device=device, amp=amp, workers=workers, augment=not no_augment,
                      init=tuple(str(p) for p in init), deterministic=deterministic)
    run_training(tiles, ws, cfg, name, resume, quiet=quiet, echo=click.echo, wait=wait)


checkpoint_option = click.option(
    "--checkpoint", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True,
    help="A checkpoint of `train run`, e.g. workspace/runs/NAME/best.pt.")


def predict_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options of train predict that train change passes on to it."""
    return option_group(
        click.option("--window", type=click.IntRange(min=32), default=None,
                     callback=multiple_of(32), help="Window side in px, a multiple of 32. "
                     "[default: the training tile size]"),
        click.option("--overlap", type=click.IntRange(min=0), default=None,
                     help="Overlap of neighbouring windows in px, below --window. [default: a "
                          "quarter window]"),
        click.option("--batch-size", type=click.IntRange(min=1), default=4,
                     help="Windows per forward pass."),
        click.option("--threshold", type=FiniteFloat(0, 1, min_open=True, max_open=True),
                     default=0.5, help="Glacier probability threshold."),
        click.option("--tta", is_flag=True, help="Average over the 8 rotations and flips; "
                     "probability.tif then has the spread as band 2."),
        device_option, amp_option)(fn)


@click.command(context_settings=CONTEXT)
@checkpoint_option
@click.option("--export", "export_dir", type=click.Path(path_type=Path, file_okay=False),
              default=None, help="Export to predict (any year or region with the "
              "checkpoint's bands). [default: the export of the model's training region and "
              "year]")
@predict_options
@click.option("--min-area", type=FiniteFloat(min=0), default=MIN_GLACIER_AREA_KM2,
              help="Drop glacier polygons smaller than this, km^2 (paper: 0.05).")
@click.option("--max-hole", type=FiniteFloat(min=0), default=0.01,
              help="Fill holes in glacier polygons smaller than this, km^2.")
@click.option("--simplify", type=FiniteFloat(min=0), default=0.0,
              help="Simplify outlines with this tolerance in metres (0: exact pixel edges).")
@click.option("--format", "outline_format", type=click.Choice(["gpkg", "parquet", "both"]),
              default="gpkg", show_default=True, help="Outlines as glaciers.gpkg (every "
              "layer), glaciers.parquet (GeoParquet, the glaciers layer) or both.")
@click.option("--name", type=Name(), default=None,
              help="Output name under predictions/RUN/. "
                                           "[default: the export's name]")
@stage_options
@user_errors
def predict(checkpoint: Path, export_dir: Path | None, window: int | None, overlap: int | None,
            batch_size: int, threshold: float, tta: bool, device: str, amp: bool,
            min_area: float, max_hole: float, simplify: float, outline_format: str,
            name: str | None, force: bool, wait: bool, quiet: bool,
            workspace: Path | None) -> None:
    """Predict glacier probability over a whole export and write glacier outlines
    (glaciers.gpkg: layer glaciers, and by_glacier with each inventory glacier's ice)."""
    from gee_export.common.layout import prediction_dir

    from .predict import PredictConfig, training_export
    from .predict import predict as run_predict

    ws = resolve_workspace(workspace)
    export_dir = Path(export_dir) if export_dir else training_export(Path(checkpoint), ws,
                                                                     click.echo)
    cfg = PredictConfig(window=window, overlap=overlap, batch_size=batch_size,
                        threshold=threshold, min_area_km2=min_area, max_hole_km2=max_hole,
                        simplify_m=simplify, device=device, amp=amp, tta=tta)
    formats = ("gpkg", "parquet") if outline_format == "both" else (outline_format,)
    if zoned_parts(export_dir, "export") is None:
        run_predict(Path(checkpoint), export_dir, ws, cfg, name, force, quiet, click.echo,
                    wait=wait, formats=formats)
        return
    from .zoned import predict_zoned

    out = prediction_dir(ws, Path(checkpoint), name or export_dir.name)
    predict_zoned(export_dir, out, ws, lambda part, part_name: run_predict(
        Path(checkpoint), part, ws, cfg, part_name, force, quiet, click.echo, wait=wait,
        formats=formats), formats, click.echo)


@click.command(context_settings=CONTEXT)
@click.option("--prediction", type=click.Path(path_type=Path, exists=True, file_okay=False),
              required=True, help="A directory written by `train predict`.")
@click.option("--reference", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              default=None, help="Reference glacier outlines (any CRS). [default: the outlines "
              "the predicted export recorded]")
@click.option("--min-area", type=FiniteFloat(min=0), default=MIN_GLACIER_AREA_KM2,
              help="Reference glaciers smaller than this (km^2, ellipsoidal) are ignored, as "
                   "prep tile labels them 255.")
@click.option("--id-field", default=None, help="Field of the reference holding glacier ids. "
              "[default: the first of glac_id, rgi_id, RGIId, GLIMSId, ... present]")
@zone_buffer_option
@click.option("--name", type=Name(), default="report",
              help="Report name: NAME.json and its figure "
              "(report.json and agreement.png by default).")
@click.option("--force", is_flag=True, help="Replace a report of this name made otherwise.")
@user_errors
def evaluate(prediction: Path, reference: Path | None, min_area: float, id_field: str | None,
             zone_buffer: float, name: str, force: bool) -> None:
    """Score a prediction against reference outlines, over the pixels with data: pixel
    scores, areas (planar and ellipsoidal), per-glacier errors by zones, outer-boundary
    distances; writes report.json and agreement.png."""
    from .evaluation import EvalConfig, evaluate_prediction
    from .predict import reference_default
    from .zoned import zoned_reference

    parts = zoned_parts(prediction, "prediction")
    ref = Path(reference) if reference else zoned_reference(prediction) if parts else \
        reference_default(Path(prediction))
    if not ref.is_file():
        raise InputError(f"{prediction}: its export recorded no outlines; give "
                         "--reference FILE")
    if not reference:
        truth = ref.parent / TRUTH_OUTLINES_FILE
        click.echo(f"--reference: {ref} (the outlines the predicted export recorded, which "
                   "may date from another year than the imagery; give --reference to score "
                   "against others" + (f", e.g. {truth}, this year's own synthetic outlines"
                                       if truth.is_file() else "") + ")")
    cfg = EvalConfig(min_area, id_field, zone_buffer)
    if parts is None:
        evaluate_prediction(Path(prediction), ref, cfg, name, force, click.echo)
        return
    from .zoned import evaluate_zoned

    evaluate_zoned(parts, Path(prediction), lambda part: evaluate_prediction(
        part.path, ref, cfg, name, force, click.echo, strip=part.strip), name, click.echo)


def change_source_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options of train change that choose what it measures: the years each checkpoint
    predicts, or predictions made before."""
    return option_group(
        click.option("--checkpoint", type=click.Path(path_type=Path, exists=True, dir_okay=False),
                     multiple=True, help="Predict every year with this checkpoint of `train run` "
                     "(resumable), then measure the change. Repeat it (e.g. the same recipe with "
                     "other --seed) for an ensemble whose spread is the model term of the "
                     "uncertainty."),
        click.option("--region", default=None, help="With --checkpoint: the exports "
                     "REGION-YEAR of the workspace."),
        click.option("--years", default=None, help="With --checkpoint: FIRST-LAST (2018-2024) "
                     "or a list (2018,2020,2024); years without a complete export are named and "
                     "skipped."),
        click.option("--predictions", type=click.Path(path_type=Path, exists=True,
                                                      file_okay=False),
                     multiple=True, help="Instead of --checkpoint: existing `train predict` "
                     "outputs, one per year (repeat the option)."))(fn)


def change_zone_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options of train change that say how a year is measured: the zones' outlines and
    ids, their buffer, and how much of a glacier must be seen."""
    return option_group(
        click.option("--reference", type=click.Path(path_type=Path, exists=True, dir_okay=False),
                     default=None, help="Glacier outlines that define the zones and ids. "
                     "[default: the outlines of the first year's export]"),
        click.option("--id-field", default=None,
                     help="Field of the reference holding glacier ids."),
        zone_buffer_option,
        click.option("--min-observed", type=FiniteFloat(0, 1), default=0.9,
                     help="A glacier seen (with data) over less than this share of its "
                          "reference outline in a year gets no area that year: the year is "
                          "left out of its fit, and flagged."))(fn)


# The options that choose and make predictions: --predictions, measured as made, refuses them.
MAKING_OPTIONS = ("region", "years", "window", "overlap", "batch_size", "threshold", "tta",
                  "device", "amp")


def _given(names: tuple[str, ...]) -> list[str]:
    """Those of the running command's options `names` that its command line gave, as flags."""
    ctx = click.get_current_context()
    return [f"--{n.replace('_', '-')}" for n in names
            if ctx.get_parameter_source(n) != click.core.ParameterSource.DEFAULT]


@click.command(context_settings=CONTEXT)
@change_source_options
@predict_options
@change_zone_options
@click.option("--name", type=Name(), default=None,
              help="Output name under predictions/RUN/. [default: "
              "REGION-change]")
@stage_options
@user_errors
def change(checkpoint: tuple[Path, ...], region: str | None, years: str | None,
           predictions: tuple[Path, ...], window: int | None, overlap: int | None,
           batch_size: int, threshold: float, tta: bool, device: str, amp: bool,
           reference: Path | None, id_field: str | None, zone_buffer: float,
           min_observed: float, name: str | None,
           force: bool, wait: bool, quiet: bool, workspace: Path | None) -> None:
    """Glacier change across years: area per glacier and year with its uncertainty, and the
    rate of change with a 90 % confidence interval.

    With --checkpoint, each year is first predicted into predictions/RUN/REGION-YEAR/ (RUN:
    the checkpoint's run directory; an existing prediction made with the same options is
    reused; with --tta, --threshold, --window, --overlap or --amp, into
    REGION-YEAR-tta-threshold0.6 and so on, beside the plain ones); with several, every
    checkpoint predicts every year. Writes predictions/RUN/REGION-change/ (-tta... likewise;
    RUN and REGION of the first checkpoint or prediction):
    change.csv (one row per glacier and a `total` row: the measured area_km2_YEAR, the
    bias-corrected area_best_km2_YEAR with its 1-sigma area_sigma_km2_YEAR, its 90 % interval
    area_ci90_low/high_YEAR and its terms sigma_level/common/year/unobserved/model/divide_YEAR,
    observed_YEAR; the rate in km^2/yr and %/yr with its 1 sigma, 90 % interval and terms,
    `significant`, rate_edge_low/high, years_used and flags), change.gpkg (predicted outlines
    per glacier and year), change.png (areas with their sigmas and intervals; ice lost and
    gained on a map) and change.json (parameters, the method and correlation model, the
    pooled year-to-year error, each year's imagery, and on the demo the check against the
    truth). Areas are ellipsoidal. The bias and the level error come from the area error model
    `train evaluate` fits on the validation ground of the scene the model's tiles were cut
    from: evaluate that prediction first. The intervals cover errors of the kinds of edge the
    validation ground holds, not those of ground unlike it, such as debris cover the
    validation tiles hold little of (see the README)."""
    from .change import ChangeConfig, predictions_to_measure, run_change, variant_name
    from .predict import PredictConfig

    ws = resolve_workspace(workspace)
    if predictions and workspace is None and not os.environ.get(WORKSPACE_ENV):
        ws = workspace_of(Path(predictions[0]), "prediction")  # the predictions' own
    cfg = PredictConfig(window=window, overlap=overlap, batch_size=batch_size,
                        threshold=threshold, device=device, amp=amp, tta=tta)
    members = predictions_to_measure(checkpoint, predictions, region, years, cfg,
                                     _given(MAKING_OPTIONS), ws, quiet, click.echo, wait)
    if checkpoint:
        name = name or variant_name(f"{region}-change", cfg)  # beside a plain change
    run_change(members[0], ws, reference, ChangeConfig(zone_buffer, id_field, min_observed),
               name, force, click.echo, ensemble=members[1:], wait=wait)


@click.command(context_settings=CONTEXT)
@tiles_option
@click.option("--models", default="lgt-unet,unet",
              help="Comma-separated models (see `train models`).")
@click.option("--bands", "band_sets", default="ABCD",
              help="Comma-separated band sets, e.g. the paper's AD,ACD,AC,AB,BD,ABD,ABCD.")
@click.option("--preset", type=click.Choice(["paper", "tiny"]), default="tiny",
              help="Size preset for every model.")
@click.option("--epochs", type=click.IntRange(min=1), default=20, help="Epochs per run.")
@batch_option
@lr_option
@click.option("--seed", type=click.IntRange(min=0), default=0, help="One seed for every run.")
@device_option
@amp_option
@workers_option
@click.option("--name", type=Name(), default="compare",
              help="Comparison name: runs are NAME-MODEL-... and "
                                                "the table goes to comparisons/NAME/.")
@quiet_option
@workspace_option
@user_errors
def compare(tiles, models, band_sets, preset, epochs, batch_size, lr, seed, device, amp,
            workers, name, quiet, workspace):
    """Train a grid of models x band sets on the same tiles; write a table and a bar chart."""
    from .compare import run_comparison

    ws = resolve_workspace(workspace)
    tiles = Path(tiles) if tiles else newest_complete(ws, "tiles", "--tiles", click.echo)
    base = TrainConfig(preset=preset, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                       device=device, amp=amp, workers=workers)
    run_comparison(tiles, ws, [m.strip() for m in models.split(",") if m.strip()],
                   [b.strip() for b in band_sets.split(",") if b.strip()], base, name, quiet,
                   click.echo)


@click.command(context_settings=CONTEXT)
@preset_option
@bands_option
@user_errors
def models(preset: str, bands: str) -> None:
    """List the models with their parameter counts, and beside the paper presets the counts
    the paper gives."""
    import torch

    from gee_export.common.bands import parse_bands

    from .models import MODELS, PAPER_PRESETS, build_model, count_parameters, paper_params_m

    n_in = len(parse_bands(bands))
    click.echo(f"{'model':<30} {'params (M)':>10} {'paper (M)':>9}  description")
    for name, spec in MODELS.items():
        if preset not in spec.presets:
            continue
        with torch.device("meta"):  # counts only: no memory, no initialization
            n = count_parameters(build_model(name, preset, n_in)) / 1e6
        paper = paper_params_m(name, preset)
        click.echo(f"{name:<30} {n:>10.2f} {paper if paper else '-':>9}  {spec.description}")
    click.echo("also: lgt-unet:P1-P2-P3-P4, one attention pattern (LL, LG, GG) per stage")
    if preset not in PAPER_PRESETS:
        click.echo(f"the paper's counts are shown beside the {' and '.join(PAPER_PRESETS)} "
                   "presets only")
