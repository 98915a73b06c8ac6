"""PNG figures of a run: learning curves and sample predictions beside the truth."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from gee_export.common.figures import new_figure, save_png


def plot_curves(metrics_csv: Path, out: Path):
    rows = list(csv.DictReader(open(metrics_csv)))
    ep = [int(float(r["epoch"])) for r in rows]
    fig, (a, b) = new_figure(1, 2, figsize=(11, 4))
    a.plot(ep, [float(r["train_loss"]) for r in rows], label="train")
    a.plot(ep, [float(r["val_loss"]) for r in rows], label="validation")
    a.set_xlabel("epoch"), a.set_ylabel("Dice + CE loss"), a.legend()
    for key, name in (("miou", "mIoU"), ("mf1", "mean F1"), ("oa", "OA"),
                      ("iou_glacier", "glacier IoU")):
        b.plot(ep, [float(r[key]) for r in rows], label=name)
    b.set_xlabel("epoch"), b.set_ylim(0, 1), b.legend(), b.set_title("validation")
    fig.tight_layout()
    save_png(fig, out)


@torch.no_grad()
def plot_samples(model, ds, device, out: Path, n: int = 4):
    """RGB (or the first band), reference and prediction for the val tiles richest in ice."""
    frac = []
    for i in range(len(ds)):
        _, lbl = ds.load(i)
        frac.append(float((lbl == 1).mean()))
    pick = list(np.argsort(frac)[::-1][:n])
    model.eval()
    fig, axes = new_figure(len(pick), 3, figsize=(9, 3 * len(pick)), squeeze=False)
    bands = ds.stats.bands
    rgb = [bands.index(b) for b in ("B4", "B3", "B2")] if {"B4", "B3", "B2"} <= set(bands) else None
    for row, i in zip(axes, pick):
        img, lbl = ds.load(int(i))
        pred = model(torch.from_numpy(img)[None].to(device)).argmax(1)[0].cpu().numpy()
        if rgb:
            show = np.clip((img[rgb].transpose(1, 2, 0) + 2) / 4, 0, 1)
        else:
            show = img[0]
        row[0].imshow(show)
        row[1].imshow(np.ma.masked_equal(lbl, 255), vmin=0, vmax=1, cmap="Blues")
        row[2].imshow(np.where(lbl == 255, np.nan, pred), vmin=0, vmax=1, cmap="Blues")
        row[0].set_title(f"{ds.ids[i]} ({'RGB' if rgb else bands[0]})")
        row[1].set_title("reference")
        row[2].set_title("prediction")
        for a in row:
            a.axis("off")
    fig.tight_layout()
    save_png(fig, out)
