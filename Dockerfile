# One image recipe for every service and the gateway; SERVICE picks which. `make images`
# (scripts/images.sh) builds them all as kfm/<name>:dev; by hand, from the repository root:
#   docker build --build-arg SERVICE=user -t kfm/user:dev .
#   docker build --build-arg SERVICE=gateway -t kfm/gateway:dev .
# SERVICE: any directory of services/ with a main.py, or gateway. BASE_IMAGE: a Debian-based
# Python 3.11 (python:3.11-slim; scripts/images.sh makes kfm/python:3.11-bookworm from Debian's
# packages where no registry is reachable). EXTRA_CA: PEM certificates the build stage trusts
# to download (a TLS-inspecting proxy's CA); empty by default, never in the final image.
#
# Two stages: `builder` installs uv and the locked dependencies (`uv sync --frozen --no-dev`)
# into /app/.venv and keeps only SERVICE's code; the final stage is the base plus that venv and
# code: no uv, pip cache, compiler or extra CA, runs as uid 10001, HEALTHCHECK on /health/live.
#
# Every container listens on 8000 (REGISTRY_DNS_PORT's default; --build-arg PORT=... or
# SERVICE_PORT at run time to change it) and keeps its SQLite file and keys under /data.
#
# A service: set SERVICE_URL to where the other services reach this container (its registry
# address), KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL (PostgreSQL in production) and, but for
# auth, JWKS_URL. It needs Kafka to start (its topics are created at startup).
# The gateway: set KAFKA_BOOTSTRAP_SERVERS (the registry) or REGISTRY_BACKEND=dns, JWKS_URL
# (auth's /.well-known/jwks.json), REDIS_URL (limits shared by every replica),
# GATEWAY_WORKERS, and GATEWAY_TRUSTED_PROXIES behind a load balancer. Mount another route
# table at /app/gateway/routes.toml (or point GATEWAY_ROUTES_FILE at it): it is reloaded when
# it changes.
# FORWARDED_ALLOW_IPS: whose X-Forwarded-For a service believes, i.e. where the gateway
# connects from. The default below is the private networks containers get (Docker,
# Kubernetes): the gateway is on one of them, not on 127.0.0.1. Without it auth's
# failed-login throttle would count every client as the gateway's address and lock them all
# out together. Narrow it to the gateway's network (or address) where other workloads share
# those networks. The gateway itself ignores it (it reads X-Forwarded-For only from
# GATEWAY_TRUSTED_PROXIES).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS builder
ARG EXTRA_CA=""
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_PYTHON=python3 \
    UV_NO_CACHE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt PIP_CERT=/etc/ssl/certs/ca-certificates.crt
# uv from PyPI into its own venv (pinned: the version that wrote uv.lock's format).
RUN if [ -n "$EXTRA_CA" ]; then printf '%s\n' "$EXTRA_CA" >> "$SSL_CERT_FILE"; fi; \
    python3 -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir uv==0.13.10
WORKDIR /app
COPY pyproject.toml uv.lock ./
# The locked dependencies only: the code runs from /app (PYTHONPATH), not as an installed
# project. Before SERVICE: this layer is shared by every image.
RUN /opt/uv/bin/uv sync --frozen --no-dev --no-install-project
COPY core /code/core
COPY services /code/services
COPY gateway /code/gateway
ARG SERVICE
# Keep only SERVICE's code (no other service, no tests: .dockerignore leaves them out of the
# context already) and write the command that serves it.
WORKDIR /code
RUN set -eu; \
    case "${SERVICE:-}" in \
      gateway) module=gateway; rm -rf services ;; \
      */*|.*|"") module= ;; \
      *) module="services.${SERVICE}"; [ -f "services/${SERVICE}/main.py" ] || module= ;; \
    esac; \
    if [ -z "$module" ]; then \
      known=gateway; for d in services/*/main.py; do known="$known $(basename "$(dirname "$d")")"; done; \
      echo "--build-arg SERVICE= must be one of: $known" >&2; exit 1; \
    fi; \
    if [ "$module" != gateway ]; then \
      rm -rf gateway; \
      find services -mindepth 1 -maxdepth 1 ! -name __init__.py ! -name "${SERVICE}" \
        -exec rm -rf {} +; \
    fi; \
    find . -type d -name tests -prune -exec rm -rf {} +; \
    printf '#!/bin/sh\nexec python -m %s "$@"\n' "$module" > serve; \
    chmod 755 serve
# Compiled here: the final stage's user cannot write __pycache__ next to root-owned code.
RUN /app/.venv/bin/python -m compileall -q /code

FROM ${BASE_IMAGE}
ARG PORT=8000
RUN useradd --create-home --uid 10001 app && mkdir -p /data && chown app /data && chmod 700 /data
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH="/app/.venv/bin:$PATH" PYTHONPATH=/app \
    SERVICE_HOST=0.0.0.0 SERVICE_PORT=${PORT} \
    FORWARDED_ALLOW_IPS=10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,127.0.0.1,::1
COPY --from=builder /app/.venv /app/.venv
ARG SERVICE
ENV DATABASE_URL=sqlite+aiosqlite:////data/${SERVICE}.db JWT_KEYS_DIR=/data/${SERVICE}-keys
COPY --from=builder /code /app
USER 10001
WORKDIR /app
VOLUME ["/data"]
EXPOSE ${PORT}
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:' + os.environ['SERVICE_PORT'] + '/health/live', timeout=2)"]
CMD ["/app/serve"]
