#!/usr/bin/env bash
# The README's test command: set up (idempotent) and run the whole test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k nms`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
PY="${PYTHON:-python3}"
exec "$PY" -m pytest -q "$@"
