#!/usr/bin/env bash
# The whole speed benchmark on one GPU, in one go (README "Performance"): inference at
# 480x864 with 1/2/5 objects (bfloat16), 4 videos at once, float32 (TF32) for comparison,
# Segmenter.stream end to end on a 128-frame 480x854 host video (transfers, padding, labels)
# and on 8 videos (64, 57, ..., 15 frames) back to back in 1 lane and in 4,
# the stage-1 and stage-2 training steps, each with FLOP utilisation and memory, plus a
# jax.profiler trace of the main programs summarised per kernel and per source scope.
# Usage: bash benchmarks/gpu_perf.sh [OUT_DIR [KEY=VALUE ...]]   (its commands took 522 s
# on an H200 when last run, before the numpy-drawn weights saved 20-40 s a command and
# before the stream_many rows were added)
#   KEY=VALUE: ModelConfig fields for every row, e.g. dilated_conv=im2col;
#   inference:KEY=VALUE / train:KEY=VALUE: for the inference / training rows only (what
#   benchmarks/pick_variants.py prints from a gpu_ab.sh log).
#   AGAME_BUDGET_S=N: stop after N seconds (gpu_env.sh), e.g. 540 inside a 600 s call.
source "$(dirname "$0")/gpu_env.sh"
shift $(( $# > 0 ? 1 : 0 ))
infer=(); train=()
for item in "$@"; do
  case $item in
    inference:*) infer+=("${item#inference:}") ;;
    train:*) train+=("${item#train:}") ;;
    *) infer+=("$item"); train+=("$item") ;;
  esac
done
imodel=(); [ ${#infer[@]} -gt 0 ] && imodel=(--model "${infer[@]}")
tmodel=(); [ ${#train[@]} -gt 0 ] && tmodel=(--model "${train[@]}")
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  git log -1 --format='commit %H %cd' 2>/dev/null
  echo "model overrides: inference ${infer[*]:-none}; training ${train[*]:-none}"
  # The rows with speed targets first (README "Performance"), so that a run stopped by
  # AGAME_BUDGET_S loses the comparisons rather than the targets.
  # Each profile is summarised right after its command, so a later command that runs
  # into the budget's deadline cannot take the earlier summaries with it.
  run python3 benchmarks/inference.py --objects 1 2 5 --dtype bfloat16 "${imodel[@]}" \
      --profile "$prof/inference" --stream 128
  summarize inference
  run python3 benchmarks/train_step.py --dtype bfloat16 --batch 2 --frames 14 --height 480 \
      --width 864 "${tmodel[@]}" --profile "$prof/stage2"
  summarize stage2
  run python3 benchmarks/train_step.py --dtype bfloat16 "${tmodel[@]}" --profile "$prof/stage1"
  summarize stage1
  run python3 benchmarks/inference.py --objects 1 5 --videos 4 --no-encode --dtype bfloat16 \
      "${imodel[@]}" --stream 64 --stream-videos 8 --stream-lanes 1 4
  run python3 benchmarks/inference.py --objects 1 --no-encode --dtype float32 "${imodel[@]}"
} 2>&1 | tee "$out/gpu_perf.log"
