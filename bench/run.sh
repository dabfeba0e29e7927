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

tmp="$(mktemp -d /tmp/knflow-bench.XXXXXX)"
keep="${KNFLOW_BENCH_KEEP:-0}"

# The Python driver stops what it starts; this is the backstop if it dies without doing so. It
# kills only the PIDs the driver recorded, and only while their command line still names $tmp.
cleanup() {
  local status=$?
  if [[ -f "$tmp/pids" ]]; then
    local pid
    while read -r pid; do
      [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || continue
      if tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$tmp"; then
        kill -TERM "$pid" 2>/dev/null || true
        sleep 0.5
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done <"$tmp/pids"
  fi
  if [[ "$keep" == 1 ]]; then
    echo "bench: kept $tmp" >&2
  else
    rm -rf "$tmp"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

python3 bench/knflow_bench.py --knflow "$knflow" --nginx "$nginx_bin" --tmp "$tmp" "$@"
