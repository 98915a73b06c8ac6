"""`prep tile`: glacier outlines rasterized into labels, and an export cut into labelled tiles
with a spatial train/validation split.

`tiles.make_tiles` cuts one export: `config` (the tile size, step, guard and windows),
`inputs` (what a tile set is made from), `plan` (the scan and the split of blocks), `worker`
(the processes that read and write tiles), `stage` (what a rerun keeps), `statistics` (the
training split's band statistics) and `overview` (the PNG). `split` holds the split rules,
`zoned` one split across UTM zones, `cut` one export or a zoned one, `verify` the checks of
a tile set on disk; `cli` is the command.
"""
