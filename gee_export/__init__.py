"""`prep export`: the 11-band 10 m stack of a region and year (Sentinel-1 VV/VH, Sentinel-2
B2 B3 B4 B8 B11, NDVI/NDSI/NDWI, the fused HMA/SRTM DEM), normalized and cut into cells.

`common/` is the foundation every stage shares. The export core: `config` (the recipe's
parameters), `regions`, `export` (the plan of cells), `stack` (the export directory),
`local/` (the recipe on rasters), `local_export` and `cell_passes` (that recipe over cells in
worker processes), `remote/` (the same on public STAC archives), `demo/` (the synthetic
region), `dry_run`. `earthengine/` is the recipe on Earth Engine; `cli` and `cli_options` are
the command.
"""
