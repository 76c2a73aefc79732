#!/usr/bin/env bash
# Debian's prometheus package for the monitoring tests (tests/test_monitoring.py runs its promtool on
# deploy/monitoring's rules; `PROMETHEUS=1 make run` starts its server), installed when missing and we are root
# with apt-get. Never fails the build: where it cannot be installed, the promtool tests skip themselves saying so.
set -uo pipefail
if command -v promtool >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's prometheus (promtool) for the monitoring tests (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  # the package's service is not started here (policy-rc.d or no systemd): only its programs are used
  apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq prometheus >/dev/null 2>&1 \
    || echo "could not install prometheus: the promtool tests will be skipped" >&2
else
  echo "no promtool and not root: the promtool tests will be skipped (apt-get install prometheus)" >&2
fi
exit 0
