#!/usr/bin/env bash
# Installs what is missing, builds knflow (release) and starts `knflow serve` on its embedded
# default: standalone engine, SQLite in ~/.local/share/knflow, a start page at http://127.0.0.1:8080/ (the
# dashboard is not built yet).
# It loads the example workflow examples/order-pipeline.yaml (namespace shop), whose functions
# are small Python scripts the daemon starts itself. Extra arguments go to `knflow serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release
exec build/release/knflow serve --apply examples/order-pipeline.yaml "$@"
