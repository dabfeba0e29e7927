# Shared by the benchmark wrappers (bench/run.sh, engine_run.sh, cluster_run.sh); sourced, not run.
#
# bench_tmpdir PREFIX: makes $tmp (/tmp/PREFIX.XXXXXX) and installs the exit trap that removes it
# (kept when KNFLOW_BENCH_KEEP=1). The Python driver stops what it starts; the trap is the
# backstop if it dies without doing so: it kills only the PIDs the driver recorded in $tmp/pids,
# and only while their command line still names $tmp.

bench_cleanup() {
  local status=$? pid
  if [[ -f "$tmp/pids" ]]; then
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
  if [[ "${KNFLOW_BENCH_KEEP:-0}" == 1 ]]; then
    echo "bench: kept $tmp" >&2
  else
    rm -rf "$tmp"
  fi
  exit "$status"
}

bench_tmpdir() {
  tmp="$(mktemp -d "/tmp/$1.XXXXXX")"
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}
