"""What the demo's sensors make of its scene: Sentinel-2 reflectance with its SCL layer and
Cloud Score+, Sentinel-1 backscatter with speckle, and the two DEM products (HMA with its voids
and ellipsoidal heights, SRTM with its noise), each at any block of map coordinates.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .noise import fbm, smoothstep, value_noise
from .scene import DEM_YEAR, ELA, DemoScene

S2_DATES = ("07-12", "08-16", "09-20")
S1_DATES = ("07-08", "07-20")
HMA_NODATA = -9999.0  # the HMA mosaic's fill value
# EGM96 geoid undulation around Qilian is about -32 m: HMA's ellipsoidal heights are that much
# lower than SRTM's geoid heights. The local recipe has to find this offset on its own.
GEOID_UNDULATION = -31.7


@dataclass
class S2Scene:
    """One Sentinel-2 date at a block of points: what the sensor and its masks say, and the
    truth (contamination: the strongest of cloud, shadow and cirrus opacity, 0-1)."""
    reflectance: np.ndarray  # (5, ...) B2 B3 B4 B8 B11
    scl: np.ndarray
    cs: np.ndarray
    cs_cdf: np.ndarray
    contamination: np.ndarray


def render_s2(scene: DemoScene, x: np.ndarray, y: np.ndarray, year: int, date_i: int) -> S2Scene:
    """Reflectance (5, ...) for B2 B3 B4 B8 B11, the SCL class and Cloud Score+ at (x, y)."""
    s = scene.surface(x, y, year)
    e, gl, deb, lake = s["elevation"], s["glacier"], s["debris"], s["lake"]
    snow = scene.seasonal_snow(x, y, e, gl, year, date_i)
    n1 = value_noise(x, y, 60, scene.seed + 3 + date_i)
    rock = np.array([0.13, 0.15, 0.18, 0.24, 0.28])[:, None] * (1 + 0.15 * n1.ravel())
    rock = rock.reshape((5,) + np.shape(x))
    veg_frac = smoothstep(3950, 3450, e) * (0.7 + 0.3 * value_noise(x, y, 300, scene.seed + 5))
    veg = np.array([0.04, 0.07, 0.05, 0.36, 0.18]).reshape((5,) + (1,) * np.ndim(x))
    refl = rock * (1 - veg_frac) + veg * veg_frac
    firn = smoothstep(ELA - 150, ELA + 150, e)
    snowy = np.array([0.86, 0.85, 0.82, 0.74, 0.07]).reshape(veg.shape)
    bare_ice = np.array([0.42, 0.44, 0.41, 0.33, 0.04]).reshape(veg.shape)
    ice = snowy * firn + bare_ice * (1 - firn)
    refl = np.where(gl & ~deb, ice, refl)
    refl = np.where(deb, rock * 0.92, refl)  # debris cover looks like the rock around it
    seasonal = np.array([0.82, 0.81, 0.78, 0.71, 0.09]).reshape(veg.shape)
    refl = np.where(snow, seasonal, refl)
    water = np.array([0.08, 0.11, 0.07, 0.03, 0.01]).reshape(veg.shape)
    refl = np.where(lake, water, refl)
    refl = refl * np.where(lake, 1.0, s["shade"])
    # Clouds (bright in SWIR, unlike snow), their shadows cast to the north-west, cirrus.
    op = scene.cloud(x, y, year, date_i)
    shadow = np.clip(scene.cloud(x + 500, y - 500, year, date_i) - op, 0, 1)
    cirrus = scene.cirrus(x, y, year, date_i)
    refl = refl * (1 - 0.65 * shadow)
    cloud_refl = np.array([0.72, 0.71, 0.70, 0.70, 0.48]).reshape(veg.shape)
    refl = refl * (1 - op) + cloud_refl * op
    cirrus_refl = np.array([0.55, 0.54, 0.53, 0.52, 0.32]).reshape(veg.shape)
    refl = refl * (1 - cirrus) + cirrus_refl * cirrus
    refl = np.clip(refl + 0.004 * value_noise(x, y, 15, scene.seed + 11 + date_i), 0.0005, 1.5)
    scl = _scl(scene, refl, op, shadow, cirrus, gl, lake, e, x, y, date_i)
    cs = _cloud_score(scene, op, shadow, cirrus, gl, e, x, y, date_i)
    # Cloud Score+ ships cs and its per-scene CDF; a monotonic stand-in keeps them distinct.
    return S2Scene(refl, scl, cs, cs ** 0.75, np.maximum(np.maximum(op, shadow), cirrus))


def _scl(scene: DemoScene, refl, op, shadow, cirrus, gl, lake, e, x, y, date_i):
    b3, b8, b4, b11 = refl[1], refl[3], refl[2], refl[4]
    scl = np.full(np.shape(x), 5, np.uint8)
    scl[(b8 - b4) / (b8 + b4) > 0.4] = 4
    scl[(b3 - b11) / (b3 + b11) > 0.4] = 11
    scl[lake] = 6
    scl[shadow > 0.3] = 3
    scl[cirrus > 0.21] = 10
    scl[op > 0.3] = 8
    scl[op > 0.6] = 9
    if date_i == 0:  # Sen2Cor's classic confusion of bright snow with cloud
        scl[gl & (e > 5050) & (value_noise(x, y, 700, scene.seed + 41) > 0.45)] = 8
    return scl


def _cloud_score(scene: DemoScene, op, shadow, cirrus, gl, e, x, y, date_i):
    """Cloud Score+ (1 clear, 0 cloudy): low under cloud, shadow and cirrus, and, on one
    date, low over some bright high snow too (the confusion the snow rule exists for)."""
    cs = 0.93 - 1.3 * op - 1.2 * shadow - 4.5 * cirrus + 0.04 * value_noise(
        x, y, 200, scene.seed + 51 + date_i)
    if date_i == 0:
        cs = np.where(gl & (e > 4950) & (value_noise(x, y, 900, scene.seed + 61) > 0.5),
                      0.3, cs)
    return np.clip(cs, 0.0, 1.0)


def render_s1(scene: DemoScene, x: np.ndarray, y: np.ndarray, year: int, date_i: int) -> np.ndarray:
    """VV, VH sigma0 in dB at points (x, y), with speckle of about 4.4 looks."""
    s = scene.surface(x, y, year)
    e, gl, deb, lake = s["elevation"], s["glacier"], s["debris"], s["lake"]
    snow = scene.seasonal_snow(x, y, e, gl, year, 0)
    shade = s["shade"]
    vv = -9.5 + 6 * np.log10(shade)
    vv = np.where(e < 3700, -11.0, vv)
    vv = np.where(snow, vv - 1.5, vv)  # thin seasonal snow: nearly transparent at C-band
    vv = np.where(gl, -18.5 + 1.5 * value_noise(x, y, 400, scene.seed + 21), vv)  # wet snow/ice
    vv = np.where(deb, -14.5, vv)  # debris over melting ice: darker than rock
    vv = np.where(lake, -24.0, vv)  # calm water: VH about -31 dB, real and low
    vh = vv - np.where(gl, 6.0, 7.0)
    rng = np.random.default_rng(abs(hash((scene.seed, year, date_i, float(np.sum(x[..., :1]))))) % (2 ** 32))
    looks = 4.4
    out = []
    for band in (vv, vh):
        lin = 10 ** (band / 10) * rng.gamma(looks, 1 / looks, np.shape(x))
        out.append(10 * np.log10(lin))
    return np.stack(out)


def render_dem_hma(scene: DemoScene, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """HMA heights (ellipsoidal, so GEOID_UNDULATION lower) with gaps as HMA_NODATA."""
    e = scene.surface(x, y, DEM_YEAR)["elevation"] + GEOID_UNDULATION
    gap = fbm(x, y, 1500, scene.seed + 77, 2) > 0.45  # HMA has voids on steep, shaded slopes
    return np.where(gap, HMA_NODATA, e)


def render_dem_srtm(scene: DemoScene, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """SRTM (2000, EGM96): the same surface, with some metres of noise."""
    e = scene.surface(x, y, DEM_YEAR)["elevation"]
    return np.round(e + 6 * value_noise(x, y, 90, scene.seed + 88))
