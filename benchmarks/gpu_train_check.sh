#!/usr/bin/env bash
# Training on a GPU in one go (see README "GPU checks"): the input pipeline's throughput,
# a short run of the full-size stage-1 setting (ResNet-101, 4x8 frames at 240x432,
# bfloat16) on synthetic videos with validation, checkpoints and the best export, then a
# few steps of stage 2 (2x14 frames at 480x864) started from it.
# Usage: bash benchmarks/gpu_train_check.sh [OUT_DIR] [STAGE1_STEPS]
STEP_TIMEOUT=${STEP_TIMEOUT:-0}          # training runs as long as its steps take
source "$(dirname "$0")/gpu_env.sh"
steps=${2:-200}
workers=$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))
synthetic=(--config.data.sources=synthetic --config.data.worker_processes=$workers
           --config.validation.source=synthetic --config.validation.num_videos=4)
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  git log -1 --format='commit %H %cd' 2>/dev/null
  run python3 benchmarks/data_pipeline.py --config configs/stage1.py --sources synthetic \
      --threads 8 --processes 0 "$workers" --batches 10
  run python3 train.py --config configs/stage1.py --workdir "$out/stage1" "${synthetic[@]}" \
      --config.train.num_steps="$steps" --config.train.log_every=25 \
      --config.train.checkpoint_every=100 --config.validation.every=100 \
      --config.validation.synthetic_frames=16
  run python3 train.py --config configs/stage2.py --workdir "$out/stage2" "${synthetic[@]}" \
      --config.data.weights=1 --config.train.init_checkpoint="$out/stage1" \
      --config.train.num_steps=30 --config.train.log_every=5 --config.validation.every=1000 \
      --config.validation.synthetic_frames=8
  ls "$out/stage1" "$out/stage1/checkpoints" "$out/stage2/checkpoints"
} 2>&1 | tee "$out/gpu_train_check.log"
