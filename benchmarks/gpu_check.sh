#!/usr/bin/env bash
# Every GPU check of the model in one run (see README "GPU checks"):
#   correctness on GPU (parity with the authors' model in float32 without TF32, the
#   backbone against torchvision), bf16-vs-f32 agreement, the demo. Speed: gpu_perf.sh.
# Usage: AGAME_SHARED=/path/to/shared bash benchmarks/gpu_check.sh [OUT_DIR]
source "$(dirname "$0")/gpu_env.sh"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  run python3 -c "import jax, flax, optax, orbax.checkpoint as o; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
  git log -1 --format='commit %H %cd' 2>/dev/null
  run env JAX_DEFAULT_MATMUL_PRECISION=highest python3 -m pytest -q -p no:cacheprovider \
      tests/test_parity_authors.py tests/test_convert.py::test_backbone_matches_torchvision
  run python3 benchmarks/precision_agreement.py --fixtures "$AGAME_SHARED/fixtures/authors_model"
  run python3 -m agame_jax.demo
} 2>&1 | tee "$out/gpu_check.log"
