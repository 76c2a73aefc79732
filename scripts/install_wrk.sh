#!/usr/bin/env bash
# Debian's wrk for the HTTP benchmarks (`make bench`, `make bench-payments`, `make bench-comparison`), installed
# when missing and we are root with apt-get. Never fails the build: the benchmarks say what is missing.
set -uo pipefail
if command -v wrk >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's wrk for the HTTP benchmarks (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq wrk >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq wrk >/dev/null 2>&1; } \
    || echo "could not install wrk: apt-get install -y wrk" >&2
else
  echo "no wrk and not root: apt-get install -y wrk" >&2
fi
exit 0
