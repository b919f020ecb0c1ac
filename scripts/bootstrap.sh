#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv and install everything the
# library, the PanGu-alpha example and the tests need. Idempotent: a second run only checks.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-$ROOT/.venv}"

# System packages: MariaDB for the data join's MySQL store tests (the tests start a throwaway server).
if ! command -v mariadb-install-db >/dev/null 2>&1 || ! { command -v mariadbd || [ -x /usr/sbin/mariadbd ]; } >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "[bootstrap] installing mariadb-server (apt)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends mariadb-server >/dev/null
    else
        echo "[bootstrap] WARNING: mariadb-server is missing (needed by tests/data_join); install it as root:" \
             "apt-get install mariadb-server" >&2
    fi
fi

# ip and tc (iproute2) for the network-namespace tests (mindspore_federated/tools/netlab.py);
# installed when missing on a root machine with apt (CI), otherwise those tests skip and say why.
if ! command -v ip >/dev/null 2>&1 || ! command -v tc >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "[bootstrap] installing iproute2 (ip, tc) for the network tests"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2
    else
        echo "[bootstrap] note: iproute2 (ip, tc) is missing: the network-namespace tests will be skipped"
    fi
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "[bootstrap] creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
fi
STAMP="$VENV/.requirements.sha"
WANT="$(cat "$ROOT"/requirements*.txt "$ROOT"/example/splitnn_pangu_alpha/requirements.txt "$ROOT"/setup.py | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    echo "[bootstrap] installing dependencies (first run downloads MindSpore, ~300 MB)"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -r "$ROOT/requirements-test.txt"
    "$VENV/bin/python" -m pip install --quiet --no-deps -e "$ROOT"
    echo "$WANT" > "$STAMP"
fi
echo "[bootstrap] environment ready: $VENV"
