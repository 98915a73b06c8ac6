"""`train run`, `predict`, `evaluate`, `change` and `compare`: models trained on tiles, scenes
predicted into glacier outlines, and those scored and followed over the years.

`models/` (the paper's Transformer U-Net and the baselines), `data`, `losses`, `metrics`,
`runtime` (devices, checkpoints, DDP) and `trainer` train; `predict/` makes a scene's
probability and outlines; `evaluation/` scores them on ground the model never trained on
(`heldout`, `zones`), with the area error model of `area_error`; `change/` measures every
glacier year by year with `uncertainty` and `trend`; `zoned` joins regions across UTM zones;
`compare` runs the paper's comparisons; `plots` and `change_map` draw; `cli` is the commands.
"""
