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
# AGAME_BUDGET_S=N (default 0: none): the script's commands share N seconds counted from
# here. Each is stopped at that deadline, and one that would start with less than
# AGAME_MIN_STEP_S (default 45) seconds left is skipped and named in the log, so a device
# call with a hard time limit still ends with its log and profile summaries (the scripts
# run their most important commands first).
budget_end=$(( ${AGAME_BUDGET_S:-0} > 0 ? SECONDS + AGAME_BUDGET_S : 0 ))
# step_limit MIN: this step's time limit in seconds (0: none), or nothing (status 1) when
# less than MIN seconds of the budget are left.
step_limit() {
  local limit=${STEP_TIMEOUT:-300}
  (( budget_end )) || { echo "$limit"; return 0; }
  local left=$(( budget_end - SECONDS ))
  (( left >= $1 )) || return 1
  (( limit == 0 || limit > left )) && limit=$left
  echo "$limit"
}
# AGAME_DRY_RUN=1: run prints each command (shell-quoted, after "=== dry run: ") instead
# of running it, and summarize only names its profiles ("=== dry run summary: "); the
# tests check the commands' arguments and the summaries' places so.
run() {
  local limit
  if [ -n "${AGAME_DRY_RUN:-}" ]; then echo "=== dry run: $(printf '%q ' "$@")"; return 0; fi
  if ! limit=$(step_limit "${AGAME_MIN_STEP_S:-45}"); then
    echo "=== skipped, $(( budget_end - SECONDS )) s of the budget left: $*"; return 0
  fi
  echo "=== $*"; local t0=$SECONDS
  timeout "$limit" "$@"
  echo "=== exit $? after $((SECONDS - t0)) s"
}
# summarize NAME...: one kernel/scope summary per profile folder, as $out/prof_NAME.txt.
summarize() {
  local limit
  if [ -n "${AGAME_DRY_RUN:-}" ]; then echo "=== dry run summary: $*"; return 0; fi
  for name in "$@"; do
    limit=$(step_limit 10) || { echo "=== no time left to summarize $name"; continue; }
    [ -d "$prof/$name" ] && timeout "$limit" python3 benchmarks/profile_summary.py \
        "$prof/$name" --top 30 > "$out/prof_$name.txt" 2>&1
  done
}
