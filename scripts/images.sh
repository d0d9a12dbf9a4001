#!/usr/bin/env bash
# Build the image of every service and of the gateway from the one root Dockerfile, tag them
# kfm/<name>:<tag>, print their sizes, then start one container (the gateway: it becomes live
# without Kafka) and wait until Docker reports it healthy. `make images` runs it.
#
#   scripts/images.sh [--only NAME]... [--tag TAG] [--no-smoke]
#
# The engine: the running one if `docker info` answers, else this script starts Debian's
# dockerd (no iptables, no bridge: a container gets no network or the host's) and leaves
# it running, its log in ~/.cache/kfm/dockerd.log.
# The base: BASE_IMAGE (e.g. python:3.11-slim where a registry is reachable). By default
# kfm/python:3.11-bookworm, made once from Debian's packages (debootstrap, then docker import)
# because these machines reach no registry.
# Extra CAs: the *.crt files of EXTRA_CA_DIR (default /usr/local/share/ca-certificates, where a
# TLS-inspecting proxy's CA lives) go to the build stage only, as the EXTRA_CA build argument,
# so pip and uv can download; the final image never holds them (see the Dockerfile).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BASE_IMAGE="${BASE_IMAGE:-kfm/python:3.11-bookworm}"
EXTRA_CA_DIR="${EXTRA_CA_DIR:-/usr/local/share/ca-certificates}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/kfm"
TAG=dev
SMOKE=1
only=()

usage() { sed -n '6p' "$0" | sed 's/^# *//' >&2; exit 2; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --only) [[ $# -ge 2 ]] || usage; only+=("$2"); shift 2 ;;
        --tag) [[ $# -ge 2 ]] || usage; TAG=$2; shift 2 ;;
        --no-smoke) SMOKE=0; shift ;;
        *) usage ;;
    esac
done

say() { echo "images: $*"; }
fail() { echo "images: FAILED: $*" >&2; exit 1; }
now() { date +%s; }
megabytes() { echo "$(($(docker image inspect -f '{{.Size}}' "$1") / 1000000)) MB"; }

# Every directory of services/ with a main.py is a service; the gateway is built too.
all_names() {
    local main
    for main in services/*/main.py; do basename "$(dirname "$main")"; done
    echo gateway
}

ensure_engine() {
    if docker info >/dev/null 2>&1; then
        say "engine: running"
        return
    fi
    command -v dockerd >/dev/null || fail "no dockerd (apt-get install docker.io: make bootstrap)"
    mkdir -p "$CACHE"
    say "engine: starting dockerd (log $CACHE/dockerd.log)"
    # setsid: the engine outlives this script (and a Ctrl-C of it) for the next build. Not
    # with fd 9 (the lock below): an engine holding it would keep every later run waiting.
    setsid dockerd --iptables=false --bridge=none >"$CACHE/dockerd.log" 2>&1 </dev/null 9>&- &
    local pid=$! i
    for i in $(seq 1 60); do
        if docker info >/dev/null 2>&1; then
            say "engine: ready after ${i}s (pid $pid)"
            return
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$CACHE/dockerd.log" >&2
            fail "dockerd exited (log above, $CACHE/dockerd.log)"
        fi
        sleep 1
    done
    tail -n 20 "$CACHE/dockerd.log" >&2
    fail "dockerd not answering after 60s (log above)"
}

# kfm/python:3.11-bookworm: Debian bookworm's Python 3.11, venv (for pip in the build stage)
# and CA certificates on a minimal Debian (debootstrap's minbase: no compiler), without package
# caches, index, documentation or translations.
ensure_base() {
    if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        say "base: $BASE_IMAGE (cached, $(megabytes "$BASE_IMAGE"))"
        return
    fi
    [[ $BASE_IMAGE == kfm/python:3.11-bookworm ]] \
        || fail "base image $BASE_IMAGE not found (docker pull it first)"
    command -v debootstrap >/dev/null || fail "no debootstrap (make bootstrap)"
    local dir start
    dir="$(mktemp -d /var/tmp/kfm-base.XXXXXX)"
    start=$(now)
    say "base: building $BASE_IMAGE from Debian's packages (debootstrap, ~2 min)"
    if ! debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$dir" http://deb.debian.org/debian >"$CACHE/debootstrap.log" 2>&1; then
        tail -n 20 "$CACHE/debootstrap.log" >&2
        rm -rf "$dir"
        fail "debootstrap (log above, $CACHE/debootstrap.log)"
    fi
    # What a container never reads: documentation, manuals, translations, package caches.
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/var/log/*.log \
        "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* \
        "$dir"/usr/share/locale/* "$dir"/var/cache/debconf/*-old
    tar -C "$dir" -c . | docker import \
        --change "ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/bin" \
        --change 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null
    rm -rf "$dir"
    say "base: built in $(($(now) - start))s, $(megabytes "$BASE_IMAGE")"
}

extra_ca() {
    local crt
    for crt in "$EXTRA_CA_DIR"/*.crt; do
        [[ -f $crt ]] && cat "$crt"
    done
    return 0
}

build() {
    local name=$1 start log
    start=$(now)
    log="$CACHE/build-$name.log"
    if ! DOCKER_BUILDKIT=0 docker build --network host \
        --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg SERVICE="$name" \
        --build-arg EXTRA_CA="$(extra_ca)" -t "kfm/$name:$TAG" . >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        fail "build of $name (log above, $log)"
    fi
    say "built kfm/$name:$TAG in $(($(now) - start))s"
}

# The gateway with a static (empty) registry and an unreachable JWKS URL: live, no Kafka needed.
smoke() {
    local name=gateway container start status=starting i
    start=$(now)
    container="kfm-smoke-$$"
    docker run -d --name "$container" --network none \
        -e REGISTRY_BACKEND=static -e JWKS_URL=http://127.0.0.1:9/.well-known/jwks.json \
        "kfm/$name:$TAG" >/dev/null
    # shellcheck disable=SC2064  # expand now: the name is fixed
    trap "docker rm -f -v $container >/dev/null 2>&1 || true" EXIT
    for i in $(seq 1 60); do
        status="$(docker inspect -f '{{.State.Health.Status}}' "$container" 2>/dev/null \
            || echo gone)"
        [[ $status == healthy || $status == unhealthy || $status == gone ]] && break
        sleep 1
    done
    if [[ $status != healthy ]]; then
        docker logs --tail 20 "$container" >&2 || true
        fail "kfm/$name:$TAG not healthy after ${i}s: $status (its log above)"
    fi
    say "smoke: kfm/$name:$TAG healthy after $(($(now) - start))s"
    docker rm -f -v "$container" >/dev/null
    trap - EXIT
}

mkdir -p "$CACHE"
# One run at a time per machine (make images and the image tests may overlap): two would both
# start an engine, or both make the base.
exec 9>"$CACHE/images.lock"
if ! flock -n 9; then
    say "waiting for another scripts/images.sh run"
    flock 9
fi
if [[ ${#only[@]} -eq 0 ]]; then mapfile -t only < <(all_names); fi
known=" $(all_names | tr '\n' ' ')"
for name in "${only[@]}"; do
    [[ $known == *" $name "* ]] || fail "unknown service $name (known:$known)"
done

total=$(now)
ensure_engine
ensure_base
for name in "${only[@]}"; do build "$name"; done
for name in "${only[@]}"; do say "size kfm/$name:$TAG $(megabytes "kfm/$name:$TAG")"; done
if [[ $SMOKE == 0 ]]; then
    say "smoke: skipped (--no-smoke)"
elif [[ " ${only[*]} " == *" gateway "* ]]; then
    smoke
else
    say "smoke: skipped (the gateway was not built: it is the one container live without Kafka)"
fi
say "done in $(($(now) - total))s"
