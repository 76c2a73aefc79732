#!/usr/bin/env bash
# Runs every test: unit, integration (real PostgreSQL + RabbitMQ), end-to-end and the portal's browser
# tests (Debian's chromium, installed first when missing: scripts/install_browser.sh) and the monitoring rules'
# promtool tests (Debian's prometheus, installed first when missing: scripts/install_prometheus.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install_browser.sh
./scripts/install_prometheus.sh
exec .venv/bin/python -m pytest "$@"
