"""The foundation every stage shares: the band table, the workspace and manifest contract,
errors, atomic output, GeoTIFF and GeoPackage writing, outlines, figures and CLI plumbing.

Nothing here knows about Earth Engine, tiles or models; every other package imports from here
and this package imports from none of them.
"""
