"""Whole-scene prediction (`train predict`): blended overlapping windows streamed into a
probability GeoTIFF, then glacier outlines (the paper's section 2.2: merge patches by averaging
overlaps, convert to polygons, drop small isolated ones).

`predict` runs it, in one process or sharded under torchrun; `training_export` and
`reference_default` find the inputs a command leaves out. One concern per module: windows
(lattice, blend weights, rows per process), streaming, working_file, shares, model (and its
test-time views), normalization, outlines, inputs, job, probability, command.
"""
from .command import predict
from .config import PredictConfig
from .inputs import checkpoint_tiles, prediction_export, reference_default, training_export
from .job import PREDICTION_OPTIONS
from .model import dihedral_view, load_model, torch_model_fn, undo_dihedral
from .normalization import normalization_warnings
from .outlines import clean_polygons, polygonize_blocks
from .streaming import NonFiniteProbability, stream_probability
from .windows import blend_weights, row_shares, window_rows, window_starts

__all__ = [
    "PREDICTION_OPTIONS",
    "NonFiniteProbability",
    "PredictConfig",
    "blend_weights",
    "checkpoint_tiles",
    "clean_polygons",
    "dihedral_view",
    "load_model",
    "normalization_warnings",
    "polygonize_blocks",
    "predict",
    "prediction_export",
    "reference_default",
    "row_shares",
    "stream_probability",
    "torch_model_fn",
    "training_export",
    "undo_dihedral",
    "window_rows",
    "window_starts",
]
