#!/usr/bin/env bash
# Set up fasterrcnn on this machine: idempotent, and quick (about a second) once done.
#   - installs torch==2.13.0 only when torch is absent (a bare `pip install torch` would
#     pull several GB of CUDA packages; any installed torch>=2.1 is kept as it is);
#   - installs this package in editable mode with its test/eval extras, again only when
#     pyproject.toml changed since the last set-up (a stamp file records its hash).
# Uses $PYTHON if set, else python3. No virtual environment is created: run it inside
# one if you want one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
PIP=("$PY" -m pip install --disable-pip-version-check --progress-bar off -q)

if ! "$PY" -c 'import torch' 2>/dev/null; then
    echo "setup: torch not found; installing torch==2.13.0 (CPU build where a local wheel exists)"
    "${PIP[@]}" "torch==2.13.0"
fi

want="$("$PY" -c 'import hashlib,os,sys; print(hashlib.sha256(open("pyproject.toml","rb").read()).hexdigest(), sys.executable, os.getcwd())')"
have="$(cat .setup-stamp 2>/dev/null || true)"
# The import check runs outside the repository, so it sees what is installed (not ./fasterrcnn)
# and fails when the installed package is another checkout's.
here="$(pwd -P)"
installed="$(cd / && "$PY" -c 'import os, fasterrcnn, pytest, pycocotools, matplotlib; print(os.path.realpath(os.path.dirname(os.path.dirname(fasterrcnn.__file__))))' 2>/dev/null || true)"
if [[ "$want" != "$have" || "$installed" != "$here" ]]; then
    echo "setup: installing fasterrcnn (editable) with its dev extras"
    "${PIP[@]}" -e ".[dev]"
    echo "$want" > .setup-stamp
fi
