#!/usr/bin/env bash
# Installs uv when missing and the whole workspace (all services, shared, dev tools) into .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv
  export PATH="$HOME/.local/bin:$PATH"
fi
uv sync --all-packages --frozen --quiet
