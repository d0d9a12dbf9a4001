#!/usr/bin/env bash
# Prepare a fresh Debian machine (run as root, e.g. by CI on a clean clone) for development and
# tests: Debian's PostgreSQL and Redis server binaries, Java + Maven for the Kafka broker, nginx
# and wrk for the gateway benchmark (bench/gateway.py), Prometheus (with promtool) and
# Alertmanager's amtool for deploy/observability/ and `make up OBS=1`, shellcheck, Docker's
# engine and debootstrap (`make images`), uv, the locked Python environment, the Apache Kafka
# jars (resolved once into the cache), and the Go-built checkers of deploy/ and .github/ (Helm,
# the Compose loader, actionlint: built once per machine, devinfra/tools.py).
#
# Idempotent: a second run installs nothing and finishes in seconds. Quiet on success; on
# failure it prints the failing step's full output. It never starts the system PostgreSQL,
# Redis, nginx, Prometheus or Alertmanager services: tests and benchmarks start throwaway
# servers of their own (see devinfra/, bench/gateway.py).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOG="$(mktemp -t kfm-bootstrap.XXXXXX)"
POLICY=/usr/sbin/policy-rc.d
OWN_POLICY=0

cleanup() {
    if [[ $OWN_POLICY == 1 ]]; then rm -f "$POLICY"; fi
    rm -f "$LOG"
}
trap cleanup EXIT

# Run a step with its output captured; show it only if the step fails.
step() {
    local what=$1
    shift
    if ! "$@" >"$LOG" 2>&1; then
        echo "bootstrap: FAILED: $what" >&2
        echo "bootstrap: command: $*" >&2
        sed 's/^/  | /' "$LOG" >&2
        exit 1
    fi
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

java_major() {
    java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1
}

missing=()
installed postgresql || missing+=(postgresql)
installed redis-server || missing+=(redis-server)
installed nginx-light || missing+=(nginx-light)
installed wrk || missing+=(wrk)
installed prometheus || missing+=(prometheus)
installed prometheus-alertmanager || missing+=(prometheus-alertmanager)
# Shipping (deploy/, .github/): shellcheck for the scripts and workflows; Debian's Docker
# engine and debootstrap for `make images` (no registry is reachable: the base image is made
# from Debian's packages, scripts/images.sh).
installed shellcheck || missing+=(shellcheck)
installed docker.io || missing+=(docker.io)
installed debootstrap || missing+=(debootstrap)
# The browser tests (tests/browser): Playwright drives Debian's chromium (/usr/bin/chromium).
installed chromium || missing+=(chromium)
command -v mvn >/dev/null || missing+=(maven)
if ! command -v java >/dev/null || [[ "$(java_major)" -lt 17 ]]; then
    missing+=(openjdk-17-jre-headless)
fi
command -v setpriv >/dev/null || missing+=(util-linux)
# The Makefile runs uv as `python3 -m uv`, so uv must be importable by python3.
if ! python3 -m uv --version >/dev/null 2>&1 && ! python3 -m pip --version >/dev/null 2>&1; then
    missing+=(python3-pip)
fi

if ((${#missing[@]})); then
    if [[ $EUID -ne 0 ]]; then
        echo "bootstrap: need root to install: ${missing[*]}" >&2
        exit 1
    fi
    # Keep package scripts from starting services (no-op where a policy already exists).
    if [[ ! -e $POLICY ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$POLICY"
        chmod 755 "$POLICY"
        OWN_POLICY=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    step "apt-get update" apt-get update -q
    step "apt-get install ${missing[*]}" \
        apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! python3 -m uv --version >/dev/null 2>&1; then
    if ! python3 -m pip install -q uv >"$LOG" 2>&1; then
        # Debian's own python3 is "externally managed" (PEP 668); uv is a standalone tool.
        step "pip install uv" python3 -m pip install -q --break-system-packages uv
    fi
fi
UV=(python3 -m uv)

cd "$ROOT"
step "uv sync --frozen" "${UV[@]}" sync --frozen
step "resolve the Apache Kafka jars (python -m devinfra fetch)" \
    "${UV[@]}" run --frozen python -m devinfra -q fetch
# Not hidden by step(): a fresh machine builds for several minutes and says so as it goes.
"${UV[@]}" run --frozen python -m devinfra.tools ensure
