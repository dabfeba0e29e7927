#!/usr/bin/env bash
# Profiles what bench/engine_run.sh measures: synchronous invokes of a workflow of N sequential
# calls to the nginx echo function, under wrk -t2 -c32 (the throughput load).
#
#   bench/engine_profile.sh          # N = 1
#   bench/engine_profile.sh 20       # N = 20
#
# Prints perf stat of the daemon, where its CPU goes (perf record with DWARF call graphs: by
# library, by function itself, and inclusive for knflow's store operations and SQLite), and the
# daemon's system calls per invoke (strace -c, a separate shorter run: strace slows it down).
# Loopback only, bounded durations; every process started here is stopped on exit.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
steps="${1:-1}"
[[ "$steps" =~ ^[0-9]+$ && "$steps" -ge 1 ]] || { echo "usage: bench/engine_profile.sh [N]" >&2; exit 2; }
knflow="${KNFLOW_BIN:-$root/build/release/knflow}"
[[ -x "$knflow" ]] || { echo "profile: build $knflow first" >&2; exit 2; }
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
for tool in perf wrk curl python3 "$nginx_bin"; do
  command -v "$tool" >/dev/null || { echo "profile: $tool is missing" >&2; exit 2; }
done

tmp="$(mktemp -d /tmp/knflow-engine-profile.XXXXXX)"
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

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The echo function: nginx answering every request with a fixed JSON body.
nport="$(free_port)"
mkdir -p "$tmp/nginx/logs"
cat >"$tmp/nginx/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 2;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $tmp/nginx/client_body;
  proxy_temp_path $tmp/nginx/proxy;
  fastcgi_temp_path $tmp/nginx/fastcgi;
  uwsgi_temp_path $tmp/nginx/uwsgi;
  scgi_temp_path $tmp/nginx/scgi;
  tcp_nodelay on;
  keepalive_timeout 60s;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$nport;
    location / { default_type application/json; return 200 '{"ok":true}'; }
  }
}
EOF
"$nginx_bin" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/logs/error.log" \
  >"$tmp/nginx.log" 2>&1 &
pids+=("$!")

port="$(free_port)"
"$knflow" serve --listen "127.0.0.1:$port" --data-dir "$tmp/data" --threads 2 >"$tmp/knflow.log" 2>&1 &
kpid=$!
pids+=("$kpid")

base="http://127.0.0.1:$port"
for _ in $(seq 300); do
  if [[ -s "$tmp/data/token" ]] && curl -s -o /dev/null -H "Authorization: Bearer $(cat "$tmp/data/token")" \
       -w '%{http_code}' "$base/readyz" | grep -q 200; then break; fi
  sleep 0.1
done
token="$(cat "$tmp/data/token")"
auth="Authorization: Bearer $token"
steps_json="$(python3 -c "import json,sys; print(json.dumps([{'name': f's{i}', 'call': 'echo'} for i in range(int(sys.argv[1]))]))" "$steps")"
curl -sS -o /dev/null -w 'create: %{http_code}\n' -H "$auth" -H 'Content-Type: application/json' \
  --data "{\"apiVersion\":\"knflow.dev/v1alpha1\",\"kind\":\"Workflow\",\"metadata\":{\"name\":\"seq-$steps\"},\"spec\":{\"functions\":{\"echo\":{\"url\":\"http://127.0.0.1:$nport/echo\"}},\"do\":$steps_json}}" \
  "$base/api/v1/namespaces/default/workflows"
url="$base/api/v1/namespaces/default/workflows/seq-$steps:invoke"
cat >"$tmp/post.lua" <<EOF
wrk.method = "POST"
wrk.body = "{}"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $token"
EOF

wrk -t2 -c32 -d2s -s "$tmp/post.lua" "$url" >/dev/null
wrk -t2 -c32 -d12s --latency -s "$tmp/post.lua" "$url" >"$tmp/wrk.out" &
wpid=$!
pids+=("$wpid")
sleep 1
perf stat -e task-clock,context-switches,cpu-migrations,page-faults -p "$kpid" -- sleep 4 2>"$tmp/stat.out"
perf record -q -F 499 --call-graph dwarf,16384 -p "$kpid" -o "$tmp/perf.data" -- sleep 4 2>/dev/null
wait "$wpid"
set +o pipefail  # the reports below end with head, which closes its pipe early
echo "--- wrk -t2 -c32 on seq-$steps"
grep -E 'requests in|Requests/sec| 50%| 99%' "$tmp/wrk.out"
invokes_per_s="$(awk '/^Requests\/sec/ {print $2}' "$tmp/wrk.out")"
echo "--- perf stat of the daemon over 4 s (per invoke: divide by 4 × invokes/s)"
grep -E 'task-clock|context-switches|cpu-migrations|page-faults' "$tmp/stat.out"
awk -v r="$invokes_per_s" '/page-faults|context-switches/ {gsub(",", "", $1); printf "%8.1f  %s per invoke\n", $1 / (4 * r), $2}' "$tmp/stat.out"
echo "--- where the page faults come from (user-space caller, inclusive)"
perf record -q -e page-faults -c 20 --call-graph dwarf,16384 -p "$kpid" -o "$tmp/pf.data" -- sleep 1 2>/dev/null &
pfpid=$!
wrk -t2 -c32 -d2s -s "$tmp/post.lua" "$url" >/dev/null
wait "$pfpid" || true
perf report -i "$tmp/pf.data" --children --sort symbol --stdio -g none 2>/dev/null |
  grep -E '^ +[0-9]' | awk '{$1=$1};1' | grep -E 'knflow::store::RunStore::|sqlite3BtreeBeginTrans|sqlite3Malloc|sysmalloc' |
  cut -c1-150 | head -12
echo "--- share of samples by library"
perf report -i "$tmp/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null |
  grep -E '^ +[0-9]' | awk '{$1=$1};1' | head -8
echo "--- top functions (self)"
perf report -i "$tmp/perf.data" --no-children --sort symbol --stdio -g none 2>/dev/null |
  grep -E '^ +[0-9]' | awk '{$1=$1};1' | cut -c1-150 | head -20
echo "--- inclusive: knflow store operations, SQLite, kernel entry points"
perf report -i "$tmp/perf.data" --children --sort symbol --stdio -g none 2>/dev/null |
  grep -E '^ +[0-9]' | awk '{$1=$1};1' |
  grep -E 'knflow::store::RunStore::|knflow::engine::Engine::Impl::(run_store_op|exec_call)|knflow::engine::HttpClient::send|sqlite3_step|sqlite3BtreeBeginTrans|sqlite3WalCheckpoint|sqlite3PagerCommitPhaseOne|\[k\] (exc_page_fault|__x64_sys_(pwrite64|fdatasync|brk|sendmsg|recvmsg|futex|epoll_wait))' |
  cut -c1-150 | head -30

if command -v strace >/dev/null; then
  echo "--- system calls of the daemon per invoke (strace -c -f over 3 s; strace slows it down)"
  wrk -t2 -c32 -d6s -s "$tmp/post.lua" "$url" >"$tmp/wrk2.out" &
  wpid=$!
  pids+=("$wpid")
  sleep 1
  curl -s -H "$auth" "$base/metrics" | awk '/^knflow_runs_started_total/ {print $2}' >"$tmp/started0"
  timeout -s INT 3 strace -c -f -p "$kpid" -o "$tmp/strace.out" 2>/dev/null || true
  curl -s -H "$auth" "$base/metrics" | awk '/^knflow_runs_started_total/ {print $2}' >"$tmp/started1"
  wait "$wpid"
  python3 - "$tmp/strace.out" "$(cat "$tmp/started0")" "$(cat "$tmp/started1")" <<'EOF'
import re, sys
path, s0, s1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
runs = max(1.0, s1 - s0)
print(f"runs started meanwhile: {runs:.0f} (the window is approximate: +/- a few %)")
for line in open(path):
    m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
    if m and m.group(2) != "total" and int(m.group(1)) / runs >= 0.2:
        print(f"{int(m.group(1)) / runs:8.1f}  {m.group(2)}")
EOF
fi
