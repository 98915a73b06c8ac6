#!/usr/bin/env bash
# The GPU measurements of issue 22 in one command, for a session that is lent a GPU:
#   1. exact resume on the device (benchmarks/resume_check.py: default kernels, --deterministic,
#      and deterministic-where-possible), with a resume that skips the device's random state as
#      the control;
#   2. training throughput and MFU of the paper preset at 512 px, model alone, one row per
#      setting the issue lists (benchmarks/bench_train.py --settings): fp32, TF32 (today's CUDA
#      default), bf16 autocast, batch 16/32/64, channels-last, --deterministic, then
#      torch.compile and CUDA graphs last (1-2 minutes of compiling each).
# Rows print as they finish: a run stopped by a time limit still shows what it measured.
# Needs only python3 with torch (the GPU machine's image has it; nothing to install). About
# 7-8 minutes on one H200; give the run 540 s and read what came back.
#
#   bash benchmarks/gpu_session.sh              # on the GPU machine
#   QUICK=1 bash benchmarks/gpu_session.sh      # anywhere: tiny preset at 64 px, that it runs
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  [ -x .venv/bin/python ] && PYTHON=.venv/bin/python
fi
export PYTHONUNBUFFERED=1
if [ -n "${QUICK:-}" ]; then
  preset=tiny px=64 steps=2 resume_px=64
  fast="fp32+b2 fp32+b2+det bf16+b2"
  slow=""
else
  preset=paper px=512 steps=10 resume_px=128
  fast="fp32+b16 tf32+b16 bf16+b16 tf32+b16+det tf32+b32 bf16+b32 bf16+b64 bf16+b32+cl"
  slow="bf16+b32+compile tf32+b32+compile bf16+b32+cudagraphs"
fi

"$PYTHON" -c 'import torch; n = torch.cuda.device_count(); print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {n} GPU(s)" + "".join(f", {torch.cuda.get_device_name(i)}" for i in range(n)) + ("" if n > 1 else "; DDP scaling (item 7) needs two: not measured"))'
echo "== 1. exact resume (item 5)"
"$PYTHON" benchmarks/resume_check.py --preset tiny --px "$resume_px" --batch 4 --steps 3
echo "== 2. training, model alone: throughput and MFU (items 1-2)"
# shellcheck disable=SC2086  # the settings are words
"$PYTHON" benchmarks/bench_train.py --presets "$preset" --px "$px" --steps "$steps" \
  --child-timeout 150 --settings $fast
if [ -n "$slow" ]; then
  # shellcheck disable=SC2086
  "$PYTHON" benchmarks/bench_train.py --presets "$preset" --px "$px" --steps "$steps" \
    --child-timeout 240 --settings $slow
fi
