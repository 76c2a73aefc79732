#!/usr/bin/env bash
# Runs every test: unit, integration (real PostgreSQL + RabbitMQ) and end-to-end.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest "$@"
