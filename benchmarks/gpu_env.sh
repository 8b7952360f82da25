# Sourced by the benchmarks/gpu_*.sh scripts: works from the repository root (also on
# PYTHONPATH), takes OUT_DIR from the script's first argument (else $OUT, else
# /tmp/agame_gpu) into $out, keeps profiler traces apart in $prof (they are large and
# deep; the scripts put their summaries in $out), shares compiled programs between the
# scripts through JAX's persistent cache, and defines run, which echoes a command, then
# its exit status and duration.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-${OUT:-/tmp/agame_gpu}}
prof=${AGAME_PROFILE_DIR:-/tmp/agame_profiles}
mkdir -p "$out" "$prof"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/agame_jax_cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-2}
# Each command is stopped after $STEP_TIMEOUT seconds (default 300; 0: never), so one that
# hangs (a compile, an autotuning) leaves time for the rest of the script.
run() {
  echo "=== $*"; local t0=$SECONDS
  timeout "${STEP_TIMEOUT:-300}" "$@"
  echo "=== exit $? after $((SECONDS - t0)) s"
}
# summarize NAME...: one kernel/scope summary per profile folder, as $out/prof_NAME.txt.
summarize() {
  for name in "$@"; do
    [ -d "$prof/$name" ] && python3 benchmarks/profile_summary.py "$prof/$name" --top 30 \
        > "$out/prof_$name.txt" 2>&1
  done
}
