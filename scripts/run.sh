#!/usr/bin/env bash
# Installs what is missing, builds knflow (release) and starts `knflow serve` on its embedded
# default: standalone engine, SQLite in ~/.local/share/knflow, dashboard at http://127.0.0.1:8080/.
# Extra arguments go to `knflow serve` (see `knflow serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release
exec build/release/knflow serve "$@"
