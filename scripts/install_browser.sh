#!/usr/bin/env bash
# Debian's Chromium for the portal's browser tests (tests/browser), installed when missing and we are
# root with apt-get; Playwright drives it (no browser is downloaded). Never fails the build: where no
# browser can be installed, the browser tests skip themselves saying so.
set -uo pipefail
if [ -x /usr/bin/chromium ] || [ -n "${CHROMIUM:-}" ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the browser tests (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1 \
    || echo "could not install chromium: the browser tests will be skipped" >&2
else
  echo "no /usr/bin/chromium and not root: the browser tests will be skipped (apt-get install chromium)" >&2
fi
exit 0
