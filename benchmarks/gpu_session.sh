#!/usr/bin/env bash
# A lent GPU's whole benchmark session in one command (README "Performance"): the A/B of
# the unsettled speed knobs (gpu_ab.sh) for AGAME_AB_S seconds, the winners picked from its
# log (pick_variants.py), then the whole benchmark (gpu_perf.sh) with them for the rest of
# AGAME_BUDGET_S. One command, so no idle time between the parts can cost the machine.
# Usage: AGAME_BUDGET_S=560 bash benchmarks/gpu_session.sh [OUT_DIR]
#   AGAME_AB_S (default 280): seconds for the A/B (its inference and stage-2 comparisons,
#   ~120 + ~160 s as estimated from the compile and call times of the last GPU log; a
#   command cut short keeps the rows it printed); 0 skips it and picks from the log an
#   earlier run left in OUT_DIR/ab (none: the defaults).
#   OUT_DIR/ab: the A/B's log; OUT_DIR/picks.txt: the comparison and what was picked;
#   OUT_DIR/perf: the benchmark's log and profile summaries.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-${OUT:-/tmp/agame_gpu}}
mkdir -p "$out/ab"
total=${AGAME_BUDGET_S:-0}
ab=${AGAME_AB_S:-280}
start=$SECONDS
if (( ab > 0 )); then
  AGAME_BUDGET_S=$ab bash "$here/gpu_ab.sh" "$out/ab"
fi
picks=$(python3 "$here/pick_variants.py" "$out/ab/gpu_ab.log" 2> "$out/picks.txt")
cat "$out/picks.txt"
left=0
if (( total > 0 )); then
  left=$(( total - (SECONDS - start) ))
  if (( left < ${AGAME_MIN_STEP_S:-45} )); then
    echo "=== no time left for gpu_perf.sh ($left s of $total)"; exit 0
  fi
fi
# $picks unquoted: one word per setting (pick_variants.py writes none with spaces).
# shellcheck disable=SC2086
AGAME_BUDGET_S=$left bash "$here/gpu_perf.sh" "$out/perf" $picks
