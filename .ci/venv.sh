# Sourced by the .ci scripts that need a Python package from PyPI: one way to make a throwaway
# virtualenv on a fresh Debian machine (installing python3-venv when root and missing).
#   orgsync_make_venv DIR PACKAGE==VERSION...   # exits the script (status 2) when it cannot
orgsync_make_venv() {
  local dir=$1
  shift
  if ! python3 -m venv "$dir" >/dev/null 2>&1; then
    # Debian's python3 keeps venv (with ensurepip) in a package of its own.
    [ "$(id -u)" = 0 ] || { echo "$(basename "$0"): python3 cannot make a venv (install python3-venv)" >&2; exit 2; }
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$dir"
    python3 -m venv "$dir"
  fi
  "$dir/bin/pip" install -q --disable-pip-version-check "$@"
}
