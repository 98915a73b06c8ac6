"""The tile dataset: selected bands, standardized with the training split's statistics."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from gee_export.common.bands import BAND_NAMES, band_indices
from gee_export.common.errors import GlacierError
from gee_export.common.layout import IMAGES_DIR, LABELS_DIR, read_manifest


def dihedral(img: torch.Tensor, lbl: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k-th of the 8 rotations/flips (k in 0..7), applied to image and label together."""
    rot, flip = k % 4, k >= 4
    if flip:
        img, lbl = img.flip(-1), lbl.flip(-1)
    if rot:
        img, lbl = torch.rot90(img, rot, (-2, -1)), torch.rot90(lbl, rot, (-2, -1))
    return img, lbl


def read_tile_split(tile_dir: Path, split: str) -> list[str]:
    """Tile ids of one split, from index.gpkg."""
    import pyogrio

    index = Path(tile_dir) / "index.gpkg"
    if not index.is_file():
        raise GlacierError(f"{tile_dir}: no index.gpkg; make tiles with `prep tile`")
    df = pyogrio.read_dataframe(index, columns=["tile_id", "split"], read_geometry=False)
    ids = sorted(df.loc[df["split"] == split, "tile_id"].tolist())
    if not ids:
        raise GlacierError(f"{tile_dir}: the {split!r} split is empty; retile with another "
                           "--val-fraction, --block-tiles or --split")
    return ids


class NormStats:
    """Per-band mean and std of the training split (from the tile manifest)."""

    def __init__(self, bands: list[str], mean: list[float], std: list[float]):
        self.bands, self.mean, self.std = list(bands), list(mean), list(std)

    @classmethod
    def from_manifest(cls, manifest: dict, bands: list[str]) -> "NormStats":
        stats = manifest["train_stats"]["bands"]
        missing = [b for b in bands if b not in stats]
        if missing:
            raise GlacierError(f"tiles lack band(s) {', '.join(missing)}; they have "
                               f"{', '.join(stats)}")
        return cls(bands, [stats[b]["mean"] for b in bands], [stats[b]["std"] for b in bands])

    def to_dict(self) -> dict:
        return {"bands": self.bands, "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, d: dict) -> "NormStats":
        return cls(d["bands"], d["mean"], d["std"])

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Standardize a (bands, h, w) array; NaN (nodata) becomes 0, the training mean."""
        m = np.asarray(self.mean, np.float32)[:, None, None]
        s = np.asarray(self.std, np.float32)[:, None, None]
        return np.nan_to_num((x - m) / s, nan=0.0)


class TileDataset(Dataset):
    def __init__(self, tile_dir: Path, split: str, bands: list[str], stats: NormStats,
                 augment: bool = False, seed: int = 0, cache: bool = True):
        self.dir = Path(tile_dir)
        self.manifest = read_manifest(self.dir, "tiles")
        have = self.manifest.get("bands", list(BAND_NAMES))
        missing = [b for b in bands if b not in have]
        if missing:
            raise GlacierError(f"{tile_dir}: tiles lack band(s) {', '.join(missing)}")
        self.ids = read_tile_split(self.dir, split)
        self.band_idx = [i + 1 for i in band_indices(bands)]  # rasterio is 1-based
        self.stats, self.augment, self.seed, self.epoch = stats, augment, seed, 0
        self._cache: dict[int, tuple] = {} if cache else None

    def __len__(self):
        return len(self.ids)

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        import rasterio

        if self._cache is not None and i in self._cache:
            return self._cache[i]
        tid = self.ids[i]
        with rasterio.open(self.dir / IMAGES_DIR / f"{tid}.tif") as s:
            img = self.stats.apply(s.read(self.band_idx))
        with rasterio.open(self.dir / LABELS_DIR / f"{tid}.tif") as s:
            lbl = s.read(1)
        if self._cache is not None:
            self._cache[i] = (img, lbl)
        return img, lbl

    def __getitem__(self, i):
        img, lbl = self.load(i)
        img, lbl = torch.from_numpy(img.copy()), torch.from_numpy(lbl.astype(np.int64))
        if self.augment:
            # Seeded by (seed, epoch, tile): the same augmentation whatever the worker count,
            # so runs and resumed runs are reproducible.
            k = int(np.random.default_rng((self.seed, self.epoch, i)).integers(8))
            img, lbl = dihedral(img, lbl, k)
        return img.contiguous(), lbl.contiguous()

