#!/usr/bin/env bash
# Benchmarks knflow on loopback and writes docs/benchmarks.md. Not a test: never run in CI.
#
#   bench/run.sh                 # full run (about 2 minutes), rewrites docs/benchmarks.md
#   bench/run.sh --no-doc        # print the tables only
#   bench/run.sh --help          # every option (durations, connections, workflow count, ...)
#
# Needs the release binary (cmake --preset release && cmake --build --preset release), wrk and
# nginx (KNFLOW_BENCH_DEPS=1 scripts/install-deps.sh). Every process it starts lives under one
# temporary directory and is stopped on exit, however the run ends.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

for arg in "$@"; do
  if [[ "$arg" == -h || "$arg" == --help ]]; then exec python3 bench/knflow_bench.py --help; fi
done

knflow="${KNFLOW_BIN:-$root/build/release/knflow}"
if [[ ! -x "$knflow" ]]; then
  echo "bench: $knflow is missing; build it with: cmake --preset release && cmake --build --preset release" >&2
  exit 2
fi
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
for tool in wrk python3 "$nginx_bin"; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "bench: $tool is missing; install it with: KNFLOW_BENCH_DEPS=1 scripts/install-deps.sh" >&2
    exit 2
  fi
done

source bench/lib.sh
bench_tmpdir knflow-bench

python3 bench/knflow_bench.py --knflow "$knflow" --nginx "$nginx_bin" --tmp "$tmp" "$@"
