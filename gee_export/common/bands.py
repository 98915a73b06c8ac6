"""The band table and the label codes: what every pixel of a stack and of a label tile means.
The band order is part of the on-disk contract."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .errors import InputError


@dataclass(frozen=True)
class Band:
    name: str
    group: str  # the paper's band groups (section 3.4): A radar, B optical, C indices, D terrain
    source: str
    unit: str
    # Fixed physical range mapped to [0, 1] by the default normalization. Identical for every
    # year and region so that a model trained on one export reads another unchanged.
    fixed_range: tuple[float, float]


BANDS: tuple[Band, ...] = (
    # Residual GRD border noise sits below about -30 dB; bright layover reaches +5.
    Band("VV", "A", "Sentinel-1 GRD sigma0", "dB", (-30.0, 5.0)),
    # VH is about 5-8 dB weaker than VV over land; calm water and radar shadow reach -35.
    Band("VH", "A", "Sentinel-1 GRD sigma0", "dB", (-35.0, 0.0)),
    Band("B2", "B", "Sentinel-2 SR blue", "reflectance", (0.0, 1.0)),
    Band("B3", "B", "Sentinel-2 SR green", "reflectance", (0.0, 1.0)),
    Band("B4", "B", "Sentinel-2 SR red", "reflectance", (0.0, 1.0)),
    Band("B8", "B", "Sentinel-2 SR NIR", "reflectance", (0.0, 1.0)),
    Band("B11", "B", "Sentinel-2 SR SWIR1 (20 m, bilinear to 10 m)", "reflectance", (0.0, 1.0)),
    # Standard sign (B8 - B4); the paper's eq. (1) prints (B4 - B8).
    Band("NDVI", "C", "(B8 - B4) / (B8 + B4)", "ratio", (-1.0, 1.0)),
    Band("NDSI", "C", "(B3 - B11) / (B3 + B11)", "ratio", (-1.0, 1.0)),
    Band("NDWI", "C", "(B3 - B8) / (B3 + B8)", "ratio", (-1.0, 1.0)),
    # 0-9000 m: Qilian spans about 1300-5830 m; 9000 covers all of High Mountain Asia so the
    # same fixed range serves every region without clipping a summit.
    Band("elevation", "D", "HMA DEM, SRTM where HMA has no data (EGM96 heights)", "m",
         (0.0, 9000.0)),
)
BAND_NAMES: tuple[str, ...] = tuple(b.name for b in BANDS)
BAND_INDEX: dict[str, int] = {b.name: i for i, b in enumerate(BANDS)}
GROUPS = "ABCD"
S1_BANDS = tuple(b.name for b in BANDS if b.group == "A")
S2_BANDS = tuple(b.name for b in BANDS if b.group == "B")
INDEX_BANDS = tuple(b.name for b in BANDS if b.group == "C")
DEM_BAND = "elevation"
# The paper's seven band combinations (Fig. 4-5).
PAPER_BAND_SETS = ("AD", "ACD", "AC", "AB", "BD", "ABD", "ABCD")

# Label tiles: glacier, background, and ignored (stack nodata, glaciers under the size limit);
# the loss and every metric skip LABEL_IGNORE.
LABEL_GLACIER, LABEL_BACKGROUND, LABEL_IGNORE = 1, 0, 255


def parse_bands(spec: str) -> list[str]:
    """Band names, in stack order, for a group string such as "ACD"."""
    letters = spec.strip().upper()
    bad = sorted({c for c in letters if c not in GROUPS})
    if not letters or bad:
        raise InputError(
            f"--bands {spec!r}: use letters from {GROUPS} only "
            f"(A radar VV VH, B optical B2-B11, C indices, D elevation)"
            + (f"; got {''.join(bad)!r}" if bad else ""))
    chosen = set(letters)
    return [b.name for b in BANDS if b.group in chosen]


def band_indices(names: Iterable[str]) -> list[int]:
    """0-based stack positions of band names."""
    out = []
    for n in names:
        if n not in BAND_INDEX:
            raise InputError(f"unknown band {n!r}; the stack has {', '.join(BAND_NAMES)}")
        out.append(BAND_INDEX[n])
    return out
