"""`python -m devinfra.stack`: the whole local system as plain processes (what `make up` runs).

`Stack` starts an Apache Kafka broker (or uses one it is given), optionally a PostgreSQL server
with one database per service, then the services in dependency order, each its own process
with its output prefixed and coloured on the console (and kept in `<state>/logs/<name>.log`).
It waits for each service's `/health/ready`, creates the admin user through auth's CLI, and on
`close()` stops the services (SIGTERM, then SIGKILL after a grace period), then the servers it
started. With `observability` (`make up OBS=1`) a Prometheus scrapes every process
(devinfra/prometheus.py, on deploy/observability/'s config). `make up` and the end-to-end
tests (tests/e2e) both run the system through it. `mode="monolith"` (`make up MODE=monolith`)
runs every service in one process instead, each with the same settings, port and database
(devinfra.stack.inprocess; docs/monolith.md).

The admin's password is generated once and kept in `<state>/admin.txt` (mode 0600): a second
`make up` logs in with it instead of creating another admin.
"""

from devinfra.stack.launcher import Stack
from devinfra.stack.process import ServiceProcess
from devinfra.stack.specs import (
    DEFAULT_ADMIN_EMAIL,
    DEFAULT_STATE_DIR,
    GATEWAY_PORT,
    JWT_AUDIENCE,
    JWT_ISSUER,
    SERVICES,
    AdminLogin,
    ServiceSpec,
    StackError,
    StackInterruptedError,
)

__all__ = [
    "DEFAULT_ADMIN_EMAIL",
    "DEFAULT_STATE_DIR",
    "GATEWAY_PORT",
    "JWT_AUDIENCE",
    "JWT_ISSUER",
    "SERVICES",
    "AdminLogin",
    "ServiceProcess",
    "ServiceSpec",
    "Stack",
    "StackError",
    "StackInterruptedError",
]
