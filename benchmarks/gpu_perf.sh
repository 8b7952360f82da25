#!/usr/bin/env bash
# The whole speed benchmark on one GPU, in one go (README "Performance"): inference at
# 480x864 with 1/2/5 objects (bfloat16), 4 videos at once, float32 (TF32) for comparison,
# the stage-1 and stage-2 training steps, each with FLOP utilisation and memory, plus a
# jax.profiler trace of every timed program summarised per kernel.
# Usage: bash benchmarks/gpu_perf.sh [OUT_DIR]      (about 6 minutes on an H100)
source "$(dirname "$0")/gpu_env.sh"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  git log -1 --format='commit %H %cd' 2>/dev/null
  run python3 benchmarks/inference.py --objects 1 2 5 --dtype bfloat16 --profile "$out/prof_inference"
  run python3 benchmarks/train_step.py --dtype bfloat16 --profile "$out/prof_stage1"
  run python3 benchmarks/train_step.py --dtype bfloat16 --batch 2 --frames 14 --height 480 \
      --width 864 --profile "$out/prof_stage2"
  run python3 benchmarks/inference.py --objects 1 5 --videos 4 --no-encode --dtype bfloat16
  run python3 benchmarks/inference.py --objects 1 --no-encode --dtype float32
  for d in "$out"/prof_*; do
    python3 benchmarks/profile_summary.py "$d" --top 30 > "$d.txt" 2>&1
  done
} 2>&1 | tee "$out/gpu_perf.log"
