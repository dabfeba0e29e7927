#!/usr/bin/env bash
# Profiles the request path that bench/run.sh measures: GET of one cached workflow.
#
#   bench/profile.sh perf        # perf stat + perf record of the daemon under wrk -t2 -c32
#   bench/profile.sh callgrind   # instructions and calls per request, under valgrind (slow)
#
# Loopback only, bounded durations; every process started here is stopped on exit.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
mode="${1:-perf}"
knflow="${KNFLOW_BIN:-$root/build/release/knflow}"
[[ -x "$knflow" ]] || { echo "profile: build $knflow first" >&2; exit 2; }
case "$mode" in
  perf) command -v perf >/dev/null || { echo "profile: perf is missing" >&2; exit 2; } ;;
  callgrind) command -v valgrind >/dev/null || { echo "profile: valgrind is missing" >&2; exit 2; } ;;
  *) echo "usage: bench/profile.sh perf|callgrind" >&2; exit 2 ;;
esac

tmp="$(mktemp -d /tmp/knflow-profile.XXXXXX)"
pids=()
cleanup() {
  local status=$? pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ "${KNFLOW_BENCH_KEEP:-0}" == 1 ]]; then echo "profile: kept $tmp" >&2; else rm -rf "$tmp"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cmd=("$knflow" serve --listen "127.0.0.1:$port" --data-dir "$tmp/data" --threads 2)
if [[ "$mode" == callgrind ]]; then
  cmd=(valgrind --tool=callgrind "--callgrind-out-file=$tmp/callgrind.out" "${cmd[@]}")
fi
"${cmd[@]}" >"$tmp/knflow.log" 2>&1 &
kpid=$!
pids+=("$kpid")

base="http://127.0.0.1:$port"
for _ in $(seq 300); do
  if [[ -s "$tmp/data/token" ]] && curl -s -o /dev/null -H "Authorization: Bearer $(cat "$tmp/data/token")" \
       -w '%{http_code}' "$base/readyz" | grep -q 200; then break; fi
  sleep 0.1
done
auth="Authorization: Bearer $(cat "$tmp/data/token")"
sed 's/^  namespace: shop$/  namespace: default/' examples/order-pipeline.yaml |
  curl -sS -o /dev/null -w 'create: %{http_code}\n' -H "$auth" -H 'Content-Type: application/yaml' \
    --data-binary @- "$base/api/v1/namespaces/default/workflows"
url="$base/api/v1/namespaces/default/workflows/order-pipeline"

if [[ "$mode" == perf ]]; then
  wrk -t2 -c32 -d2s -H "$auth" "$url" >/dev/null
  wrk -t2 -c32 -d12s --latency -H "$auth" "$url" >"$tmp/wrk.out" &
  wpid=$!
  pids+=("$wpid")
  sleep 1
  perf stat -e task-clock,context-switches,cpu-migrations -p "$kpid" -- sleep 4 2>"$tmp/stat.out"
  perf record -q -F 1999 -g -p "$kpid" -o "$tmp/perf.data" -- sleep 5 2>/dev/null
  wait "$wpid"
  grep -E 'requests in|Requests/sec| 50%| 99%' "$tmp/wrk.out"
  grep -E 'task-clock|context-switches|cpu-migrations' "$tmp/stat.out"
  echo "--- share of samples by library"
  perf report -i "$tmp/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null |
    grep -E '^ +[0-9]' | awk '{$1=$1};1' | head -8
  echo "--- top symbols (self)"
  perf report -i "$tmp/perf.data" --no-children --sort symbol --stdio -g none 2>/dev/null |
    grep -E '^ +[0-9]' | awk '{$1=$1};1' | cut -c1-150 | head -30
else
  curl -s -o /dev/null -H "$auth" "$url"
  callgrind_control -z "$kpid" >/dev/null 2>&1
  wrk -t1 -c4 -d8s -H "$auth" "$url" | tee "$tmp/wrk.out" | grep -E 'requests in'
  callgrind_control -d "$kpid" >/dev/null 2>&1
  requests="$(grep -o '^ *[0-9]* requests' "$tmp/wrk.out" | awk '{print $1}')"
  dump="$(ls "$tmp"/callgrind.out.* | head -1)"
  python3 - "$dump" "$requests" <<'EOF'
import collections, re, subprocess, sys
path, n = sys.argv[1], int(sys.argv[2])
names, calls = {}, collections.Counter()
cfn = None
for line in open(path, errors="replace"):
    m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?", line)
    if m:
        kind, ident, name = m.groups()
        if name:
            names[ident] = name.strip()
        if kind == "cfn":
            cfn = ident
        continue
    m = re.match(r"calls=(\d+)", line)
    if m:
        calls[cfn] += int(m.group(1))
by_name = collections.Counter()
for k, v in calls.items():
    by_name[names.get(k, "?")] += v
annotate = subprocess.run(["callgrind_annotate", "--inclusive=yes", path], capture_output=True,
                          text=True).stdout
total = int(re.search(r"^\s*([\d,]+) .*PROGRAM TOTALS", annotate, re.M).group(1).replace(",", ""))
print(f"requests: {n}; instructions per request: {total / n:,.0f}")
print("--- calls per request")
wanted = [("malloc", "malloc"), ("pthread_mutex_lock", "pthread_mutex_lock@@GLIBC_2.2.5"),
          ("SHA256 (one-shot)", "SHA256"), ("EVP_MD_fetch", "EVP_MD_fetch"),
          ("Router split_path", "knflow::http::(anonymous namespace)::split_path("),
          ("timer scheduled", "void boost::asio::detail::epoll_reactor::schedule_timer<"),
          ("prometheus Family<Histogram>::Add", "prometheus::Family<prometheus::Histogram>::Add("),
          ("prometheus Family<Counter>::Add", "prometheus::Family<prometheus::Counter>::Add(")]
for label, key in wanted:
    c = sum(v for name, v in by_name.items() if name == key or (key.endswith(("(", "<")) and name.startswith(key)))
    print(f"{c / n:8.2f}  {label}")
print("--- instructions per request, inclusive, in knflow functions")
shown = 0
for line in annotate.replace("(anonymous namespace)", "{anonymous}").splitlines():
    m = re.match(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+\?\?\?:(knflow::[^(\[]*)", line)
    if not m or re.search(r"knflow::cli::(run|serve)", m.group(2)):
        continue
    print(f"{int(m.group(1).replace(',', '')) / n:10,.0f}  {m.group(2).strip()}")
    shown += 1
    if shown == 14:
        break
EOF
fi
