"""`python -m tests.integration.procs.served_sample PORT`: the sample service served as the
reference services are, through `core.serving.serve` (so it logs through `core.logs`, as
`LOG_FORMAT`, `LOG_LEVEL` and `ACCESS_LOG` say); the port comes from `SERVICE_PORT`."""

from __future__ import annotations

from core.serving import serve

if __name__ == "__main__":
    serve("tests.sample_service.app:service")
