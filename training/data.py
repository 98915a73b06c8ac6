"""The tile dataset: selected bands, standardized with the training split's statistics."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from gee_export.common.bands import BAND_NAMES, band_indices
from gee_export.common.errors import InputError
from gee_export.common.layout import read_manifest, tile_files
from gee_export.common.rasters import open_raster
from gee_export.common.tile_index import read_tile_rows


def dihedral(img: torch.Tensor, lbl: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k-th of the 8 rotations/flips (k in 0..7), applied to image and label together."""
    rot, flip = k % 4, k >= 4
    if flip:
        img, lbl = img.flip(-1), lbl.flip(-1)
    if rot:
        img, lbl = torch.rot90(img, rot, (-2, -1)), torch.rot90(lbl, rot, (-2, -1))
    return img, lbl


def read_tile_split(tile_dir: Path, split: str) -> list[str]:
    """Tile ids of one split, from index.gpkg (read with sqlite3: no GDAL needed)."""
    ids = [r[0] for r in read_tile_rows(tile_dir, split)]
    if not ids:
        raise InputError(f"{tile_dir}: the {split!r} split is empty; retile with another "
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
            raise InputError(f"tiles lack band(s) {', '.join(missing)}; they have "
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
        inv = (1 / np.asarray(self.std, np.float32))[:, None, None]
        y = (x - m) * inv
        # copyto with a mask, not nan_to_num: the latter also scans for +-inf, which made this
        # a fifth of `train predict` (measured at 4096^2).
        np.copyto(y, 0.0, where=~np.isfinite(y))
        return y


# Decoded tiles kept in memory per training process, its loader workers included (a 512 px,
# 11-band tile: 11.5 MB).
CACHE_MB = 1024


class TileCache:
    """Decoded tiles by index, least recently used first out, within a byte budget that every
    copy of the cache shares: a DataLoader gives each of its worker processes a copy, and each
    keeps budget / num_workers. Made for `workers` loader workers, the copy in the process
    that made it keeps nothing (the workers load; its own few reads pass through)."""

    def __init__(self, budget: int, workers: int = 0):
        from collections import OrderedDict

        self.budget, self.workers, self.bytes = budget, workers, 0
        self._items: OrderedDict = OrderedDict()

    @property
    def max_bytes(self) -> int:
        """This copy's share of the budget."""
        info = get_worker_info()
        if info is not None:
            return self.budget // info.num_workers
        return 0 if self.workers else self.budget

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        item = self._items.get(i)
        if item is not None:
            self._items.move_to_end(i)
        return item

    def put(self, i: int, item: tuple[np.ndarray, np.ndarray]) -> None:
        size, limit = sum(a.nbytes for a in item), self.max_bytes
        if size > limit:
            return
        self._items[i] = item
        self.bytes += size
        while self.bytes > limit:
            _, old = self._items.popitem(last=False)
            self.bytes -= sum(a.nbytes for a in old)


class TileDataset(Dataset):
    """Tiles of one split. Items are indexed by `i` or by `(i, epoch)`: the augmentation of a
    tile is seeded by (seed, epoch, i) alone, so it changes every epoch and is the same in
    any loader worker, with any number of workers, in a resumed run as in an unbroken one."""

    def __init__(self, tile_dir: Path, split: str, bands: list[str], stats: NormStats,
                 augment: bool = False, seed: int = 0, cache_mb: float = CACHE_MB):
        self.dir = Path(tile_dir)
        self.manifest = read_manifest(self.dir, "tiles")
        have = self.manifest.get("bands", list(BAND_NAMES))
        missing = [b for b in bands if b not in have]
        if missing:
            raise InputError(f"{tile_dir}: tiles lack band(s) {', '.join(missing)}")
        self.ids = read_tile_split(self.dir, split)
        self.band_idx = [i + 1 for i in band_indices(bands)]  # rasterio is 1-based
        self.stats, self.augment, self.seed = stats, augment, seed
        self.cache = TileCache(int(cache_mb * 2 ** 20))

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The standardized image and the label of tile i."""
        item = self.cache.get(i)
        if item is None:
            img_path, lbl_path = (self.dir / rel for rel in tile_files(self.ids[i]))
            with open_raster(img_path, "tile") as s:
                img = self.stats.apply(s.read(self.band_idx))
            with open_raster(lbl_path, "label tile") as s:
                item = (img, s.read(1))
            self.cache.put(i, item)
        return item

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        i, epoch = key if isinstance(key, tuple) else (key, 0)
        img, lbl = self.load(i)
        img, lbl = torch.from_numpy(img.copy()), torch.from_numpy(lbl.astype(np.int64))
        if self.augment:
            k = int(np.random.default_rng((self.seed, epoch, i)).integers(8))
            img, lbl = dihedral(img, lbl, k)
        return img.contiguous(), lbl.contiguous()


def loader_worker_init(worker_id: int) -> None:
    """A loader worker exits with its training process, however that dies (kill -9
    included), at once instead of at the next check of torch's watchdog (up to 5 s)."""
    from gee_export.common.workers import die_with_parent

    die_with_parent()


class GlobalBatches:
    """Batch sampler: the same global batches whatever the number of processes.

    Each epoch's order is a permutation seeded by (seed, epoch). Global batch j is split into
    `world` near-equal parts and this rank takes part `rank`; a last batch with fewer tiles
    than processes is topped up with tiles from the epoch's start, so that every process
    steps the same number of times. Items carry the epoch, for the augmentation's seed.
    """

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: bool = True,
                 rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.rank, self.world, self.epoch = rank, world, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self):
        order = self.order()
        for j in range(len(self)):
            batch = order[j * self.batch_size:(j + 1) * self.batch_size]
            if len(batch) < self.world:
                batch += order[:self.world - len(batch)]
            part = np.array_split(np.array(batch), self.world)[self.rank]
            yield [(int(i), self.epoch) for i in part]
