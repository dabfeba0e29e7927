#!/usr/bin/env bash
# Installs what knflow needs to build, test and benchmark on Debian 12, and nothing that is
# already there. Idempotent: a second run only checks. Used by both README commands and .ci/run.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config ccache clang-format
  libboost-json1.81-dev libboost-url1.81-dev libboost-program-options1.81-dev
  libyaml-cpp-dev libgit2-dev prometheus-cpp-dev catch2 libssl-dev libsqlite3-dev
  libjq-dev libseccomp-dev libre2-dev sqlite3 python3 curl openssl
)
if [[ "${KNFLOW_BENCH_DEPS:-0}" == 1 ]]; then
  packages+=(wrk nginx-light)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: everything is installed"
  exit 0
fi

sudo=""
if [[ $(id -u) != 0 ]]; then sudo="sudo"; fi
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
