#!/usr/bin/env bash
# The whole benchmark on one GPU, within a time budget (docs/performance.md):
#   inference at 480x864 with 1/2/5 objects (bfloat16) and Segmenter.stream_many end to
#   end on a 128-frame host video; the stage-2 and stage-1 training steps; 4 videos at
#   once and 8 videos streamed through 1 and 4 lanes; float32 (TF32) for comparison.
# The rows with targets run first, so a budget that runs out costs the comparisons.
# The first three commands also write a jax.profiler trace, summarised per kernel and
# per source scope in OUT_DIR/profile_<name>.txt.
# Usage: bash benchmarks/gpu.sh OUT_DIR [BUDGET_SECONDS]     (default 540)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bash benchmarks/gpu.sh OUT_DIR [BUDGET_SECONDS]}
end=$(( SECONDS + ${2:-540} ))
traces=${AGAME_TRACE_DIR:-/tmp/agame_traces}       # large; only their summaries go to OUT_DIR
mkdir -p "$out" "$traces"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/agame_jax_cache}

# run NAME ARGS...: the command under the time left (skipped with under 45 s left); if it
# wrote a trace under $traces/NAME, its summary goes to OUT_DIR/profile_NAME.txt.
run() {
  local name=$1 left=$(( end - SECONDS )) t0=$SECONDS
  shift
  if (( left < 45 )); then echo "=== skipped, $left s left: $*"; return; fi
  echo "=== $*"
  timeout "$left" "$@"
  echo "=== exit $? after $(( SECONDS - t0 )) s"
  if [ -d "$traces/$name" ] && (( end - SECONDS > 5 )); then
    timeout $(( end - SECONDS )) python3 benchmarks/profile_summary.py "$traces/$name" \
      --top 30 > "$out/profile_$name.txt" 2>&1
  fi
}

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  git log -1 --format='commit %H %cd' 2>/dev/null
  run inference python3 benchmarks/inference.py --objects 1 2 5 --stream 128 \
      --profile "$traces/inference"
  run stage2 python3 benchmarks/train_step.py --batch 2 --frames 14 --height 480 --width 864 \
      --profile "$traces/stage2"
  run stage1 python3 benchmarks/train_step.py --profile "$traces/stage1"
  run lanes python3 benchmarks/inference.py --objects 1 5 --videos 4 --no-encode \
      --stream 64 --stream-videos 8 --stream-lanes 1 4
  run float32 python3 benchmarks/inference.py --objects 1 --no-encode --dtype float32
} 2>&1 | tee "$out/gpu.log"
