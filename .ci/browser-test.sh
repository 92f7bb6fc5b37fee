#!/usr/bin/env bash
# Checks the status page in a real browser (issue 8): starts the broker with a healthy SQLite
# link and a webhook link whose receiver is down, loads the page in headless Chromium, reads
# the rendered DOM, brings the receiver up and follows the link through verifying to active.
# Screenshots of each state go to $ARTIFACTS_DIR (default /tmp/orgsync-artifacts).
#
# Usage: ORGSYNC_BIN=.build/debug/orgsync bash .ci/browser-test.sh
# Builds nothing: ORGSYNC_BIN is the built executable. Installs Debian's chromium when it is
# missing (needs root). Everything listens on 127.0.0.1; every process it starts is stopped
# by the Python driver on exit, also on failure or interruption.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export ORGSYNC_BIN="${ORGSYNC_BIN:-.build/debug/orgsync}"
export ARTIFACTS_DIR="${ARTIFACTS_DIR:-/tmp/orgsync-artifacts}"
if [ ! -x "$ORGSYNC_BIN" ]; then
  echo "browser-test: $ORGSYNC_BIN is not an executable (build first, or set ORGSYNC_BIN)" >&2
  exit 2
fi

browser="$(command -v chromium || command -v chromium-browser || true)"
if [ -z "$browser" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "browser-test: chromium is missing (run as root to install Debian's package)" >&2
    exit 2
  fi
  echo "browser-test: installing chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  browser="$(command -v chromium)"
fi
export CHROMIUM_BIN="$browser"

exec python3 .ci/browser_test.py
