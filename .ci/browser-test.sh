#!/usr/bin/env bash
# Checks the status page in a real browser, used as an operator would (issues 8 and 16):
# Selenium drives Debian's chromium through Debian's chromedriver; the test clicks the page's
# links and buttons and types into its token field, follows a link through suspended,
# verifying and active, pauses and resumes it, pages through its sync log, retries a dead
# letter, pauses and resumes a PostgreSQL capture source, and runs axe-core on the overview and the detail view (any critical or serious
# violation fails), and the Cluster section of a one-member cluster on a nats-server. See the docstring of .ci/browser_test.py for every step. Full-height
# screenshots of each state and axe's results go to $ARTIFACTS_DIR (default
# /tmp/orgsync-artifacts).
#
# Usage: ORGSYNC_BIN=.build/debug/orgsync bash .ci/browser-test.sh
# Needs the throwaway PostgreSQL of .ci/postgres.sh (its ORGSYNC_TEST_PG_* exported, as .ci/run
# has them): the page's capture source reads a table of its own there.
# Builds nothing: ORGSYNC_BIN is the built executable. Installs Debian's chromium and
# chromium-driver when missing (needs root); selenium and axe-selenium-python (pinned) go in a
# temporary virtualenv. Selenium uses the local chromedriver and chromium only (Selenium
# Manager is told to stay offline). Everything listens on 127.0.0.1; every process the test
# starts is stopped by the Python driver on exit, also on failure or interruption.
# Env: KEEP_TEMP=1 keeps the temporary directory (broker and chromedriver logs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# selenium 4.52.0 needs a certifi newer than PyPI's mirror here serves; axe-selenium-python
# 3.x needs Python 3.12 (Debian 12 has 3.11): 2.1.6 bundles axe-core 3.1.1.
SELENIUM_VERSION=4.51.0
AXE_SELENIUM_VERSION=2.1.6

export ORGSYNC_BIN="${ORGSYNC_BIN:-.build/debug/orgsync}"
export ARTIFACTS_DIR="${ARTIFACTS_DIR:-/tmp/orgsync-artifacts}"
if [ ! -x "$ORGSYNC_BIN" ]; then
  echo "browser-test: $ORGSYNC_BIN is not an executable (build first, or set ORGSYNC_BIN)" >&2
  exit 2
fi

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "browser-test: missing Debian packages: ${need[*]} (run as root to install them)" >&2
    exit 2
  fi
  echo "browser-test: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
CHROMIUM_BIN="$(command -v chromium)"
CHROMEDRIVER_BIN="$(command -v chromedriver)"
export CHROMIUM_BIN CHROMEDRIVER_BIN
# Selenium Manager must not fetch a driver or a browser: the paths above are the only ones.
export SE_OFFLINE=true

work="$(mktemp -d /tmp/orgsync-browser-venv.XXXXXX)"
test_pid=""
cleanup() {
  if [ -n "$test_pid" ] && kill -0 "$test_pid" 2>/dev/null; then kill -TERM "$test_pid" 2>/dev/null || true; wait "$test_pid" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
# The test stops its own processes on SIGTERM/SIGINT: pass them on and let it.
trap 'exit 143' TERM
trap 'exit 130' INT

echo "browser-test: installing selenium $SELENIUM_VERSION and axe-selenium-python $AXE_SELENIUM_VERSION in a temporary virtualenv"
# shellcheck source=/dev/null
source .ci/venv.sh
orgsync_make_venv "$work/venv" "selenium==$SELENIUM_VERSION" "axe-selenium-python==$AXE_SELENIUM_VERSION"

"$work/venv/bin/python" .ci/browser_test.py &
test_pid=$!
wait "$test_pid"
