"""`python -m tests.generator.stack_runner STATE_DIR KAFKA NAME...`: the `make up` stack of the
repository it runs in (its devinfra/stack/services.toml), cut to the services NAMEd, on free
ports and SQLite, against a running broker; writes `STATE_DIR/up.json` (ports, the admin's
login) once every service is ready, and runs until SIGTERM.

The generator's end-to-end test runs it inside a generated copy of the repository, so what
starts is what `make up` would start there: nothing is wired by hand."""

from __future__ import annotations

import json
import signal
import sys
import uuid
from pathlib import Path
from types import FrameType

from devinfra.stack import SERVICES, Stack


def main(argv: list[str]) -> int:
    state, kafka, *names = argv
    prefix = f"gen_{uuid.uuid4().hex[:8]}_"
    stack = Stack([s for s in SERVICES if s.name in names], state_dir=Path(state),
                  base_port=0, kafka=kafka, prefix=prefix, ready_timeout=60, stop_timeout=10,
                  env={"REGISTRY_TOPIC": f"{prefix}platform.registry"})

    def on_term(signum: int, frame: FrameType | None) -> None:
        stack.request_stop()

    signal.signal(signal.SIGTERM, on_term)
    try:
        stack.start()
        admin = stack.admin
        (Path(state) / "up.json").write_text(json.dumps({
            "ports": stack.ports,
            "admin": None if admin is None else [admin.email, admin.password]}))
        return stack.watch()
    finally:
        stack.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
