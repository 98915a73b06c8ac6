"""`prep export --source stac`: the local recipe on scenes found through public STAC APIs
(Planetary Computer, Earth Search, or any API named with --stac-api).

`providers` (where each API keeps the inputs, and how its values differ), `options` (the
command line's choice of source), `catalogue` (each cell's scenes, kept for a resume),
`client` (the one network boundary), `assets` (a STAC asset read as the recipe reads a file)
and `export` (the job, on local processes or a Dask cluster).
"""
