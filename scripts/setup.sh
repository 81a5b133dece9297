#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine, and nothing it already has:
#   - Debian packages: chromium, ffmpeg, redis-server, curl, procps, iproute2, python3-venv (and
#     node/npm if absent);
#   - tests/js/node_modules from tests/js/package-lock.json (playwright-core, no browser
#     download: the tests use /usr/bin/chromium);
#   - the virtualenv tests/py/.venv from tests/py/requirements.txt (aiortc, numpy, grpcio,
#     grpcio-tools, pinned).
# Idempotent: a second run changes nothing and asks no registry. Runs as root (as CI does) or
# with sudo. Non-interactive.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

log() { printf '[setup] %s\n' "$*"; }

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "setup.sh: run as root (or install sudo)" >&2; exit 1; }
    SUDO=(sudo)
fi

# --- Debian packages -------------------------------------------------------------------------
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# The cluster tests follow redirects with curl; the harness signals processes with kill(1).
command -v curl >/dev/null 2>&1 || missing+=(curl ca-certificates)
[[ -x /bin/kill || -x /usr/bin/kill ]] || missing+=(procps)
# The network-namespace suites (hls_player) build veth pairs and routing rules with ip(8).
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
# `venv` needs ensurepip, which Debian ships separately in python3-venv.
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    missing+=(python3-venv)
fi
if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -q
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    log "Debian packages present"
fi

# A content stamp says whether an install matches its lock file; a changed lock reinstalls.
stamp_of() { sha256sum "$1" | cut -d' ' -f1; }

# --- npm: playwright-core --------------------------------------------------------------------
JS=$ROOT/tests/js
want=$(stamp_of "$JS/package-lock.json")
if [[ ! -d $JS/node_modules/playwright-core || $(cat "$JS/node_modules/.setup-stamp" 2>/dev/null) != "$want" ]]; then
    log "npm ci in tests/js"
    # No browser download (it cannot work here, and /usr/bin/chromium is used instead).
    (cd "$JS" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" >"$JS/node_modules/.setup-stamp"
else
    log "tests/js/node_modules up to date"
fi

# --- Python venv: aiortc, numpy --------------------------------------------------------------
PY=$ROOT/tests/py
want=$(stamp_of "$PY/requirements.txt")
if [[ ! -x $PY/.venv/bin/python || $(cat "$PY/.venv/.setup-stamp" 2>/dev/null) != "$want" ]]; then
    log "creating tests/py/.venv"
    rm -rf "$PY/.venv"
    python3 -m venv "$PY/.venv"
    "$PY/.venv/bin/python" -m pip install -q --disable-pip-version-check -r "$PY/requirements.txt"
    echo "$want" >"$PY/.venv/.setup-stamp"
else
    log "tests/py/.venv up to date"
fi

log "done"
