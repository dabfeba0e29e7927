#!/usr/bin/env bash
# Installs what is missing, builds the release binary (what the README's run command builds), and
# runs every test: formatting, the Debug build's unit, integration and end-to-end tests, then the
# whole suite again under ASan+UBSan.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

echo "== clang-format"
mapfile -t sources < <(git ls-files '*.cpp' '*.hpp')
clang-format --dry-run -Werror "${sources[@]}"

# The real kube-apiserver, etcd, kube-controller-manager, kubectl and helm for the integration
# tests, built from their Go modules into a cache outside the tree (the first build on a machine
# takes 10 to 20 minutes; later runs find them cached at once).
echo "== Kubernetes test binaries"
test/kubeenv/build.sh

# The release build is what the README's run command builds (-O3 warns where -O0 does not).
echo "== build (release)"
cmake --preset release >/dev/null
cmake --build --preset release

jobs=$(nproc)
for preset in dev asan; do
  echo "== build ($preset)"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset"
  echo "== test ($preset)"
  ctest --preset "$preset" -j "$jobs"
done
