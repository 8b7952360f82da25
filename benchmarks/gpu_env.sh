# Sourced by the benchmarks/gpu_*.sh scripts: works from the repository root (also on
# PYTHONPATH), takes OUT_DIR from the script's first argument (else $OUT, else
# /tmp/agame_gpu) into $out, and defines run, which echoes a command, then its exit status
# and duration.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-${OUT:-/tmp/agame_gpu}}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
run() { echo "=== $*"; local t0=$SECONDS; "$@"; echo "=== exit $? after $((SECONDS - t0)) s"; }
