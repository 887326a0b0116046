#!/usr/bin/env bash
# The test command README.md gives: installs what the tests need, then runs lint and the suite.
# Real peers: Debian's aria2, opentracker, transmission-daemon (with transmission-cli), qbittorrent-nox and
# nginx (a web seed mirror), chromium for the web UI's browser test (driven by Playwright, which uses this
# chromium and downloads no browser) - installed here when missing (needs root or sudo) - libtorrent's Python
# wheel and pytest (the [test] extra).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=""
for tool in aria2c:aria2 opentracker:opentracker transmission-daemon:transmission-daemon \
            transmission-remote:transmission-cli qbittorrent-nox:qbittorrent-nox nginx:nginx chromium:chromium; do
  PATH="$PATH:/usr/sbin" command -v "${tool%%:*}" >/dev/null 2>&1 || missing="$missing ${tool#*:}"
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
# With arguments: one pytest with them. Without: the whole suite as TORRENTCORE_TEST_JOBS (default 3) pytest
# processes side by side, each running one shard (tests/conftest.py deals the tests out). Most tests wait on
# real clients and sockets rather than the CPU: on 2 cores 3 shards took 936 s where one took 1,496 s (loaded).
if [ $# -gt 0 ]; then
  exec python3 -m pytest -q -p no:cacheprovider "$@"
fi
jobs="${TORRENTCORE_TEST_JOBS:-3}"
logs="$(mktemp -d)"
pids=()
for ((shard = 0; shard < jobs; shard++)); do
  TORRENTCORE_TEST_SHARD="$shard/$jobs" python3 -m pytest -q -p no:cacheprovider -o console_output_style=classic \
    >"$logs/shard-$shard.log" 2>&1 &
  pids+=($!)
done
status=0
for ((shard = 0; shard < jobs; shard++)); do
  if wait "${pids[$shard]}"; then result=passed; else result="FAILED"; status=1; fi
  echo "=== shard $shard/$jobs: $result"
  cat "$logs/shard-$shard.log"
done
rm -rf "$logs"
exit "$status"
