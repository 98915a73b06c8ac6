"""Loader workers exit with their training process, however it dies: each asks the kernel for
a signal when its parent dies (else, after a kill -9, a worker lingers until torch's watchdog
notices, up to 5 s later)."""
from __future__ import annotations

import ctypes
import os
import signal
import sys
from types import SimpleNamespace

import pytest
import torch

from training.runtime import Processes
from training.trainer import TrainConfig, _loaders

PR_GET_PDEATHSIG = 2


class _Probe(torch.utils.data.Dataset):
    """Each item: the process that loaded it and the signal it gets when its parent dies."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, key):
        sig = ctypes.c_int(0)
        ctypes.CDLL(None).prctl(PR_GET_PDEATHSIG, ctypes.byref(sig), 0, 0, 0)
        return torch.tensor([os.getpid(), sig.value])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a Linux facility")
def test_the_training_loaders_workers_die_with_their_parent():
    run = SimpleNamespace(cfg=TrainConfig(batch_size=2), procs=Processes(),
                          device=torch.device("cpu"), train_ds=_Probe(), val_ds=_Probe())
    for loader in _loaders(run, workers=1):
        items = torch.cat(list(loader))
        assert (items[:, 0] != os.getpid()).all()  # loaded in a worker...
        assert (items[:, 1] == signal.SIGTERM).all()  # ...that dies with this process
