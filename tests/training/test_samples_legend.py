"""samples.png: the classes it shows are named in a legend."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from gee_export.common.bands import BAND_NAMES


class _Tiles:
    """Two 32 px tiles: glacier on the left, an ignored strip at the bottom."""
    ids = ["t0000_0000", "t0000_0001"]
    stats = SimpleNamespace(bands=list(BAND_NAMES))

    def __len__(self):
        return 2

    def load(self, i):
        lbl = np.zeros((32, 32), np.uint8)
        lbl[:, :16 + i] = 1
        lbl[28:] = 255
        return np.zeros((len(BAND_NAMES), 32, 32), np.float32), lbl


class _Model(torch.nn.Module):
    def forward(self, x):  # glacier where the left half is
        logits = torch.zeros(x.shape[0], 2, *x.shape[2:])
        logits[:, 1, :, :16] = 1
        return logits


def test_samples_png_names_its_classes(tmp_path, monkeypatch):
    from training import plots

    figures = []
    monkeypatch.setattr(plots, "save_png", lambda fig, path: figures.append(fig))
    plots.plot_samples(_Model(), _Tiles(), torch.device("cpu"), tmp_path / "samples.png")
    (fig,) = figures
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "background", "glacier", "ignored: no data or glacier under --min-area"]
    reference = fig.axes[1].images[0].get_array()
    assert set(np.unique(reference)) == {0, 1, 2}  # each legend entry appears in the panel
    for panel in fig.axes[1:3]:  # the colours the legend shows are the panels' colours
        im = panel.images[0]
        assert [tuple(h.get_facecolor()) for h in legend.legend_handles] == \
            [tuple(im.cmap(im.norm(k))) for k in range(3)]
