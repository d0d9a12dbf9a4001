# One image recipe for every service and the gateway; SERVICE picks which. From the repository
# root:
#   docker build --build-arg SERVICE=auth -t platform/auth .        (auth, user, driver,
#   docker build --build-arg SERVICE=gateway -t platform/gateway .   notification, order, gateway)
# Every container listens on 8000 (REGISTRY_DNS_PORT's default; --build-arg PORT=... or
# SERVICE_PORT at run time to change it) and keeps its SQLite file and keys under /data.
#
# A service: set SERVICE_URL to where the other services reach this container (its registry
# address), KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL (PostgreSQL in production) and, but for
# auth, JWKS_URL.
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
FROM python:3.11-slim

ARG SERVICE
ARG PORT=8000
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy \
    SERVICE_HOST=0.0.0.0 SERVICE_PORT=${PORT} \
    DATABASE_URL=sqlite+aiosqlite:////data/${SERVICE}.db JWT_KEYS_DIR=/data/${SERVICE}-keys \
    FORWARDED_ALLOW_IPS=10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,127.0.0.1,::1
RUN pip install --no-cache-dir uv==0.13.9 && useradd --create-home --uid 10001 app
WORKDIR /app
COPY pyproject.toml uv.lock ./
# The locked dependencies only: the code runs from /app (PYTHONPATH), not as an installed project.
RUN uv sync --frozen --no-dev --no-install-project
COPY core ./core
COPY services ./services
COPY gateway ./gateway
# Keep only SERVICE's code (no other service, no tests) and write the command that serves it.
RUN set -eu; \
    case "${SERVICE:-}" in \
      gateway) module=gateway; rm -rf services ;; \
      */*|.*|"") module= ;; \
      *) module="services.${SERVICE}"; [ -d "services/${SERVICE}" ] || module= ;; \
    esac; \
    if [ -z "$module" ]; then \
      known=gateway; for d in services/*/; do known="$known $(basename "$d")"; done; \
      echo "--build-arg SERVICE= must be one of: $known" >&2; exit 1; \
    fi; \
    if [ "$module" != gateway ]; then \
      rm -rf gateway; \
      find services -mindepth 1 -maxdepth 1 ! -name __init__.py ! -name "${SERVICE}" \
        -exec rm -rf {} +; \
    fi; \
    find . -path ./.venv -prune -o -type d -name tests -prune -exec rm -rf {} +; \
    printf '#!/bin/sh\nexec python -m %s "$@"\n' "$module" > serve; \
    chmod 755 serve
RUN mkdir -p /data && chown app /data && chmod 700 /data
USER 10001
ENV PATH="/app/.venv/bin:$PATH" PYTHONPATH=/app
VOLUME ["/data"]
EXPOSE ${PORT}
CMD ["/app/serve"]
