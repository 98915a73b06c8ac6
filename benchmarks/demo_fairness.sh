#!/usr/bin/env bash
# What the demo measures, each score named for what it covers (the README's table): band sets
# D, B and all bands on the held-out validation tiles, the majority class, the 2018 scene held
# out in space and in-sample, 2020 against 2020's own outlines (held out in time), and the
# change 2018-2020 against the truth with its 90 % interval coverage.
#
#   bash benchmarks/demo_fairness.sh [WORKSPACE]      (about 10 minutes on 2 idle cores)
#
# The same protocol as `make demo` (tiny preset, 15 epochs, lr 1e-3, seed 0, 256 px tiles in
# blocks of 2); finished steps are reused on a rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
WS=${1:-/tmp/demo-fairness}
BIN=${BIN:-.venv/bin}
for y in 2018 2019 2020; do
    "$BIN/prep" export --region demo --year "$y" --workspace "$WS" --quiet | tail -1
done
"$BIN/prep" tile --workspace "$WS" --export "$WS/exports/demo-2018" --size 256 --block-tiles 2 \
    --workers 2 --quiet | tail -1
"$BIN/train" compare --workspace "$WS" --tiles "$WS/tiles/demo-2018" --models lgt-unet \
    --bands D,B,ABCD --preset tiny --epochs 15 --lr 1e-3 --name bands --quiet | tail -1
CK="$WS/runs/bands-lgt-unet-tiny-ABCD/best.pt"
P="$WS/predictions/bands-lgt-unet-tiny-ABCD"
"$BIN/train" change --workspace "$WS" --checkpoint "$CK" --region demo --years 2018-2020 \
    --quiet | tail -1
"$BIN/train" evaluate --prediction "$P/demo-2018" | tail -1
"$BIN/train" evaluate --prediction "$P/demo-2020" --name truth-2020 \
    --reference "$WS/exports/demo-2020/truth_outlines.gpkg" | tail -1
"$BIN/python" - "$WS" <<'PY'
import json, sys
from pathlib import Path

ws = Path(sys.argv[1])
rows = {r["bands"]: r for r in json.loads(
    (ws / "comparisons/bands/comparison.json").read_text())["rows"]}
val = json.loads((ws / "tiles/demo-2018/manifest.json").read_text())["splits"]["val"]
pred = ws / "predictions/bands-lgt-unet-tiny-ABCD"
r18 = json.loads((pred / "demo-2018/report.json").read_text())["pixels"]
r20 = json.loads((pred / "demo-2020/truth-2020.json").read_text())["pixels"]
check = json.loads((pred / "demo-change/change.json").read_text())["truth_check"]
print(f"{'score':<46} {'measures':<26} mIoU")
for bands in ("D", "B", "ABCD"):
    print(f"{'band set ' + bands:<46} {'held out: validation tiles':<26} {rows[bands]['miou']:.4f}")
print(f"{'majority class (all background)':<46} {'held out: validation tiles':<26} "
      f"{(1 - val['glacier_fraction']) / 2:.4f}")
print(f"{'2018 scene, pixels in no training tile':<46} {'held out in space':<26} "
      f"{r18['held_out']['miou']:.4f}")
print(f"{'2018 scene, training tiles':<46} {'in-sample':<26} {r18['training']['miou']:.4f}")
print(f"{'2020 against its own outlines':<46} {'held out in time':<26} {r20['held_out']['miou']:.4f}")
print(f"change 2018-2020: total {check['total_change_km2']:+.3f} km^2 against "
      f"{check['true_total_change_km2']:+.3f} ({100 * check['total_change_error']:+.1f} %), signs "
      f"{check['large_sign_right']}/{check['large_glaciers']}, coverage90 {check['coverage90']:.2f} "
      f"of {check['coverage90_glaciers']}, flagged {[f['glacier_id'] for f in check['flagged']]}")
PY
