#!/usr/bin/env bash
# Benchmarks the cluster controller (`knflow controller`) against a real kube-apiserver + etcd
# (test/kubeenv) and rewrites the "Cluster controller" section of docs/benchmarks.md (only that
# section). Not a test: never run in CI.
#
#   bench/cluster_run.sh                  # full run: N = 100 then 1,000 Workflows, 60 s no-op window
#   bench/cluster_run.sh --no-doc         # print the section only
#   bench/cluster_run.sh --sizes 100      # a shorter run (e.g. to debug)
#   bench/cluster_run.sh --json F         # also save every figure; --from-json F re-renders from it
#   bench/cluster_run.sh --help           # every option
#
# Needs the release binary (cmake --preset release && cmake --build --preset release, or
# KNFLOW_BIN=path/to/knflow) and the Kubernetes test binaries (test/kubeenv/build.sh). Every
# process it starts (etcd, kube-apiserver, knflow) lives under one temporary directory and is
# stopped on exit, however the run ends.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

for arg in "$@"; do
  if [[ "$arg" == -h || "$arg" == --help ]]; then exec python3 bench/cluster_bench.py --help; fi
  if [[ "$arg" == --from-json || "$arg" == --from-json=* ]]; then
    exec python3 bench/cluster_bench.py "$@"
  fi
done

knflow="${KNFLOW_BIN:-$root/build/release/knflow}"
if [[ ! -x "$knflow" ]]; then
  echo "bench: $knflow is missing; build it with: cmake --preset release && cmake --build --preset release" >&2
  exit 2
fi
if ! "$knflow" controller --help >/dev/null 2>&1; then
  echo "bench: $knflow has no 'controller' command (built before it existed); rebuild it" >&2
  exit 2
fi
if ! bash test/kubeenv/build.sh --print >/dev/null 2>&1 && [[ -z "${KNFLOW_KUBE_BIN:-}" ]]; then
  echo "bench: the Kubernetes test binaries are missing; build them with: test/kubeenv/build.sh" >&2
  exit 2
fi

# KubeEnv puts its folder (etcd, kube-apiserver) under $tmp (TMPDIR below), so the exit trap
# of bench/lib.sh covers those processes too; they also die with the driver (PDEATHSIG).
source bench/lib.sh
bench_tmpdir knflow-cluster-bench

TMPDIR="$tmp" python3 bench/cluster_bench.py --knflow "$knflow" --tmp "$tmp" "$@"
