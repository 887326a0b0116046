#!/usr/bin/env bash
# The test command README.md gives: installs what the tests need, then runs lint and the suite.
# Real peers: Debian's aria2 and opentracker (installed here when missing; needs root or sudo),
# libtorrent's Python wheel and pytest (from the [test] extra).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v aria2c >/dev/null 2>&1 || ! command -v opentracker >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq aria2 opentracker >/dev/null
fi

python3 -m pip install -q ".[test]"
python3 -m ruff check .
lint-imports
python3 -m pytest -q -p no:cacheprovider "$@"
