#!/usr/bin/env bash
# A/B of the speed knobs that have no default measured yet, on one GPU, the comparisons
# that decide defaults first. Each command compares its variants in one process
# (--variants: the same drawn weights, the default first, so every comparison has its
# baseline in the same run):
#   - 1/5-object inference: the default, model.stem_conv = space_to_depth (the stem's
#     7x7/2 conv on 3 channels as a 4x4/1 conv on 16) and model.dilated_conv =
#     space_to_batch / im2col (layer4's and mask propagation's dilated 3x3 convolutions);
#   - the stage-2 step with the three dilated formulations;
#   - the whole frame loop as one CUDA graph (XLA's command buffers also for while loops
#     and conditionals; by default the host drives the loop an iteration at a time),
#     1/5-object inference and the stage-2 step against the default rows above;
#   - equality of the dilated and strided formulations on this device (float32 without
#     TF32, so the tolerances are those of the CPU tests);
#   - the frame loop unrolled 4 frames per iteration, 1-object inference.
# benchmarks/pick_variants.py reads the log and prints the winners in the form
# gpu_perf.sh takes, so the full benchmark can run next with them (README "Performance").
# Usage: bash benchmarks/gpu_ab.sh [OUT_DIR]   (AGAME_BUDGET_S=N: stop after N seconds)
source "$(dirname "$0")/gpu_env.sh"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  git log -1 --format='commit %H %cd' 2>/dev/null
  run python3 benchmarks/inference.py --objects 1 5 --no-encode --variants default \
      stem_conv=space_to_depth dilated_conv=space_to_batch dilated_conv=im2col
  run python3 benchmarks/train_step.py --dtype bfloat16 --batch 2 --frames 14 --height 480 \
      --width 864 --variants default dilated_conv=space_to_batch dilated_conv=im2col
  graphs="${XLA_FLAGS:-} --xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL"
  run env XLA_FLAGS="$graphs" python3 benchmarks/inference.py --objects 1 5 --no-encode
  run env XLA_FLAGS="$graphs" python3 benchmarks/train_step.py --dtype bfloat16 --batch 2 \
      --frames 14 --height 480 --width 864
  run env JAX_DEFAULT_MATMUL_PRECISION=highest python3 -m pytest -q -p no:cacheprovider \
      tests/test_dilated_conv.py tests/test_strided_conv.py
  run python3 benchmarks/inference.py --objects 1 --no-encode --unroll 1 4
} 2>&1 | tee "$out/gpu_ab.log"
