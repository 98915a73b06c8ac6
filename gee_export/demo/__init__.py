"""The embedded demo region: a deterministic synthetic mountain scene in the Qilian Mountains.

SYNTHETIC DATA. The scene sits at a real place (around Qiyi glacier, 39.2 N 97.8 E, UTM 47N)
but every pixel is generated here from a seed. It is built so that no single sensor is enough:

- seasonal snow patches outside the glaciers are as bright and high-NDSI as glacier snow
  (label 0), but keep rock-like radar backscatter and rough terrain;
- one valley glacier has a debris-covered tongue that looks like rock in the optical bands but
  is dark in radar (wet ice under debris) and smooth in the DEM;
- lakes, vegetation low down, clouds and their shadows in some optical dates, a no-data swath
  edge, Sentinel-1 border noise below -30 dB, gaps in the HMA DEM that SRTM must fill, and an
  SCL layer that mistakes high snow for cloud on one date (the classic mask failure).

Every field is a pure function of map coordinates, so any window of any source grid is
generated on its own: the generator never holds a whole scene, and larger scenes (benchmarks)
cost memory per window only.

The package is split by concern: `scene` (what the world is each year), made of `relief` (the
rock), `glaciers` (the inventory's glaciers and their change) and `weather` (snow, clouds and
cirrus); `sensors` (what Sentinel-1, Sentinel-2 and the DEMs make of it), `sources` (the files
the local recipe reads), and `noise` (the coordinate-pure noise all of them draw on).
"""
from __future__ import annotations
