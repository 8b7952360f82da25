#!/usr/bin/env bash
# evaluate.py on a GPU: the full-size model (random weights, default dtype) over the DAVIS
# sample clips at 480x854, reporting timing.json (model frames/s without compile or disk
# I/O, and end-to-end frames/s with them), one lane and three,
# then the exact-resume training test on the GPU.
# Usage: AGAME_SHARED=/path/to/shared bash benchmarks/gpu_eval_check.sh [OUT_DIR]
source "$(dirname "$0")/gpu_env.sh"
{
  nvidia-smi --query-gpu=name,memory.total --format=csv
  run python3 -c "
import jax
from agame_jax import ModelConfig, init_variables
from agame_jax.checkpoint import save_variables
cfg = ModelConfig()
save_variables('$prof/random_full', init_variables(cfg, jax.random.key(0)), cfg)"
  sample="$AGAME_SHARED/data/davis2016_sample"
  run python3 evaluate.py --checkpoint "$prof/random_full" --dataset davis2017 \
      --data-root "$sample" --output "$out/eval" --chunk-size 32
  cat "$out/eval/timing.json"
  # The three sample videos side by side (one batch of 3 lanes) instead of back to back.
  run python3 evaluate.py --checkpoint "$prof/random_full" --dataset davis2017 \
      --data-root "$sample" --output "$out/eval_lanes3" --chunk-size 32 --lanes 3
  cat "$out/eval_lanes3/timing.json"
  run python3 -m pytest -q -p no:cacheprovider tests/test_train_loop.py -k resume
} 2>&1 | tee "$out/gpu_eval_check.log"
