"""The sources on disk: the files of a source directory by kind and date, each Sentinel-2
scene's cloud percent, and which cloud mask the scenes allow."""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gee_export.common.errors import InputError, InputNotFoundError

from .reading import _open, band_map
from .spectral import SCL_CLOUDY

CLOUD_MASKS = ("auto", "cloudscore", "scl")
_DATED = re.compile(r"^(S1|S2|CS)_(\d{4}-\d{2}-\d{2})")


@dataclass
class LocalSources:
    s1: dict[str, list[Path]] = field(default_factory=dict)  # date -> files
    s2: dict[str, list[Path]] = field(default_factory=dict)
    cloud_score: dict[str, list[Path]] = field(default_factory=dict)
    hma: list[Path] = field(default_factory=list)
    srtm: list[Path] = field(default_factory=list)
    outlines: Path | None = None
    # scene -> cloud percent known from its metadata (a STAC item's eo:cloud_cover); a scene
    # not in it has its cloud measured from its SCL
    cloud_percent: dict[str, float] = field(default_factory=dict)

    @classmethod
    def scan(cls, directory: Path) -> "LocalSources":
        directory = Path(directory)
        if not directory.is_dir():
            raise InputNotFoundError(f"--source-dir {directory}: no such directory")
        s = cls()
        groups = {"S1": defaultdict(list), "S2": defaultdict(list), "CS": defaultdict(list)}
        for f in sorted(directory.glob("*.tif")):
            m = _DATED.match(f.name)
            if m:
                groups[m.group(1)][m.group(2)].append(f)
            elif f.name.startswith("DEM_HMA"):
                s.hma.append(f)
            elif f.name.startswith("DEM_"):
                s.srtm.append(f)
        s.s1, s.s2, s.cloud_score = (dict(groups[k]) for k in ("S1", "S2", "CS"))
        if (directory / "outlines.gpkg").is_file():
            s.outlines = directory / "outlines.gpkg"
        return s

    def in_window(self, which: str, window: tuple[str, str]) -> dict[str, list[Path]]:
        return {d: fs for d, fs in getattr(self, which).items() if window[0] <= d < window[1]}

    def all_files(self) -> list[Path]:
        fs = [f for d in (self.s1, self.s2, self.cloud_score) for v in d.values() for f in v]
        return sorted(fs + self.hma + self.srtm)


def scene_cloud_percent(files: list[Path]) -> float | None:
    """Share of a scene's valid pixels that SCL calls cloud, from a decimated read of SCL
    (the local stand-in for the scene metadata's CLOUDY_PIXEL_PERCENTAGE)."""
    from rasterio.enums import Resampling

    for f in files:
        with _open(f) as src:
            names = band_map(src)
            if "SCL" in names:
                h, w = max(1, src.height // 4), max(1, src.width // 4)
                scl = src.read(names["SCL"], out_shape=(h, w), resampling=Resampling.nearest)
                valid = (scl != 0) & (scl != 1)
                return 100.0 * float(np.isin(scl, SCL_CLOUDY)[valid].sum()) / max(1, valid.sum())
    return None


def resolve_cloud_mask(requested: str, sources: LocalSources, s2_dates: list[str]) -> str:
    """'cloudscore' or 'scl'; 'auto' picks Cloud Score+ when every scene has a CS_ file, as
    the Earth Engine recipe uses it."""
    if requested not in CLOUD_MASKS:
        raise InputError(f"--cloud-mask {requested!r}: use {', '.join(CLOUD_MASKS)}")
    have = all(d in sources.cloud_score for d in s2_dates)
    if requested == "cloudscore" and not have:
        missing = [d for d in s2_dates if d not in sources.cloud_score]
        raise InputNotFoundError(f"--cloud-mask cloudscore: no CS_<date>*.tif for scene(s) "
                                 f"{', '.join(missing)}")
    if requested == "auto":
        return "cloudscore" if have else "scl"
    return requested
