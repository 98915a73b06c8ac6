"""torchrun's entry for test_predict_ranks.py: `train predict` with a fault planted in one
rank, chosen by the environment (nothing is planted without it):

    PLANT_BAND_WIDTH=N  column bands of N px (the command line keeps 4096)
    PLANT_LOG=DIR       every rank appends the column band it streams to DIR/rank-R
    PLANT_KILL=R        rank R kills itself (SIGKILL) once its first column band is recorded
    PLANT_NAN=R         rank R's model returns nan
"""
import dataclasses
import os
import signal
import sys
from pathlib import Path

import numpy as np

import training.predict as P
import training.predict.model as model
import training.predict.shares as shares
import training.predict.streaming as streaming
from gee_export.common.cli import train

RANK = int(os.environ["RANK"])
ENV = os.environ

if "PLANT_BAND_WIDTH" in ENV:
    _predict = P.predict

    def _banded(checkpoint, export_dir, workspace, cfg, *args, **kwargs):
        cfg = dataclasses.replace(cfg, band_width=int(ENV["PLANT_BAND_WIDTH"]))
        return _predict(checkpoint, export_dir, workspace, cfg, *args, **kwargs)

    P.predict = _banded

if "PLANT_LOG" in ENV:
    _band = streaming._stream_band

    def _logged_band(*args):
        with open(Path(ENV["PLANT_LOG"]) / f"rank-{RANK}", "a") as f:
            f.write(f"{args[7]}\n")  # c0
        return _band(*args)

    streaming._stream_band = _logged_band

if ENV.get("PLANT_KILL") == str(RANK):
    _write_json = shares.write_json

    def _then_die(path, record):
        _write_json(path, record)
        if record["bands_done"]:
            os.kill(os.getpid(), signal.SIGKILL)

    shares.write_json = _then_die

if ENV.get("PLANT_NAN") == str(RANK):
    model.torch_model_fn = lambda *a, **k: (lambda x: np.full((len(x),) + x.shape[2:], np.nan,
                                                              np.float32))

sys.exit(train.main(args=sys.argv[1:], prog_name="train"))
