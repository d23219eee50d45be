#!/usr/bin/env bash
# The README's demo command (the main job): set up (idempotent), then `fasterrcnn demo`:
# generate the synthetic data set, train the small preset on the CPU, evaluate, and write
# detection images, a loss curve and PR curves under runs/demo/.
# Extra arguments go to `fasterrcnn demo`, e.g. `bash scripts/demo.sh --out /tmp/demo`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
PY="${PYTHON:-python3}"
exec "$PY" -m fasterrcnn demo "$@"
