#!/usr/bin/env bash
# Benchmarks the standalone engine on loopback and rewrites the "Standalone engine" section of
# docs/benchmarks.md (only that section). Not a test: never run in CI.
#
#   bench/engine_run.sh                 # full run (about 6 minutes)
#   bench/engine_run.sh --no-doc        # print the tables only
#   bench/engine_run.sh --only fork     # one part: calls, fork or memory
#   bench/engine_run.sh --json F        # also save every figure; --from-json F re-renders from it
#   bench/engine_run.sh --help          # every option
#
# Needs the release binary (cmake --preset release && cmake --build --preset release), wrk and
# nginx (KNFLOW_BENCH_DEPS=1 scripts/install-deps.sh). Every process it starts lives under one
# temporary directory and is stopped on exit, however the run ends.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

for arg in "$@"; do
  if [[ "$arg" == -h || "$arg" == --help ]]; then exec python3 bench/engine_bench.py --help; fi
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

tmp="$(mktemp -d /tmp/knflow-engine-bench.XXXXXX)"
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
        if [[ -r "/proc/$pid/cmdline" ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$tmp"; then
          kill -KILL "$pid" 2>/dev/null || true
        fi
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

python3 bench/engine_bench.py --knflow "$knflow" --nginx "$nginx_bin" --tmp "$tmp" "$@"
