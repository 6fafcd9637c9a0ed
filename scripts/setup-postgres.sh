#!/usr/bin/env bash
# Debian's PostgreSQL server binaries, for the shared feedback store's tests
# (tests/test_feedback_postgres.py starts its own throwaway server on loopback with them; it never
# uses the cluster the package may create). Idempotent; skipped, saying so, when not root or no
# apt-get: those tests then skip with the reason.
set -euo pipefail

if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    echo "setup-postgres: $(ls -d /usr/lib/postgresql/*/bin | tail -1)/postgres present"
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-postgres: no PostgreSQL server; install one as root (Debian: apt-get install postgresql)," \
         "else the PostgreSQL feedback-store tests skip"
    exit 0
fi
echo "setup-postgres: installing Debian's postgresql"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
echo "setup-postgres: $(ls -d /usr/lib/postgresql/*/bin | tail -1)/postgres installed"
