#!/usr/bin/env bash
# Runs a search as a Slurm job array of N shards plus a report job that merges them.
#   scripts/slurm/submit.sh N RUNS [SBATCH OPTIONS...] -- SEARCH ARGS...
# e.g. scripts/slurm/submit.sh 8 runs/arc -p gpu --gres=gpu:1 -- --task arc-easy --limit 200 --backend cuda
# Shard i writes RUNS/shard-i (resumable); the report lands in RUNS/merged. SBATCH OPTIONS go to
# both jobs. COLA_BIN: the binary (default target/release/xtask, built with
# `cargo build --release -p xtask [--features cuda]`). Prints the two job ids.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ $# -lt 3 ]; then
    sed -n '2,8p' "$0" >&2
    exit 2
fi
shards=$1 runs=$2
shift 2
if ! [[ $shards =~ ^[1-9][0-9]*$ ]]; then
    echo "submit.sh: N must be a whole number, at least 1 (got \`$shards\`)" >&2
    exit 2
fi
opts=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do opts+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
bin=${COLA_BIN:-target/release/xtask}
if [ ! -x "$bin" ]; then
    echo "submit.sh: no binary at $bin; build it with \`cargo build --release -p xtask\` or set COLA_BIN" >&2
    exit 2
fi
export COLA_BIN=$bin
mkdir -p "$runs"
array=$(sbatch --parsable --array=0-$((shards - 1)) "${opts[@]}" "$here/search.sbatch" "$shards" "$runs" -- "$@")
array=${array%%;*}
report=$(sbatch --parsable --dependency=afterok:"$array" "${opts[@]}" "$here/report.sbatch" "$runs")
report=${report%%;*}
echo "search array: job $array ($shards shards into $runs/shard-*)"
echo "report:       job $report (after all shards succeed; into $runs/merged)"
