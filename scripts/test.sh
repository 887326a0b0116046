#!/usr/bin/env bash
# The test command README.md gives: installs what the tests need, then runs lint and the suite.
# Real peers: Debian's aria2, opentracker, transmission-daemon (with transmission-cli) and qbittorrent-nox
# (installed here when missing; needs root or sudo), chromium for the web UI's browser test (driven by
# Playwright, which uses this chromium and downloads no browser), libtorrent's Python wheel and pytest (the
# [test] extra).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=""
for tool in aria2c:aria2 opentracker:opentracker transmission-daemon:transmission-daemon \
            transmission-remote:transmission-cli qbittorrent-nox:qbittorrent-nox chromium:chromium; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing="$missing ${tool#*:}"
done
if [ -n "$missing" ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

python3 -m pip install -q ".[test]"
python3 -m ruff check .
lint-imports
python3 -m pytest -q -p no:cacheprovider "$@"
