#!/usr/bin/env bash
# Headless Chromium for the page's end-to-end test (tests/test_page_e2e.py): Debian's chromium
# package, driven by the Python playwright package installed into .venv. Playwright's own browser
# download ("playwright install") is never used: it needs a network this project does not have.
# Idempotent: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    echo "setup-browser: installing Debian's chromium"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

PYTHON=${PYTHON:-.venv/bin/python}
if ! "$PYTHON" -c "import playwright" >/dev/null 2>&1; then
    echo "setup-browser: installing the playwright Python package into $(dirname "$(dirname "$PYTHON")")"
    "$PYTHON" -m pip install -q playwright
fi
echo "setup-browser: $(chromium --version 2>/dev/null | head -1), playwright $("$PYTHON" -c 'from importlib.metadata import version; print(version("playwright"))')"
