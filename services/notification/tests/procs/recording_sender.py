"""A sender for tests of the service as a process (`NOTIFICATION_SENDER=
services.notification.tests.procs.recording_sender:recording`): it appends every attempt to the
JSON-lines file RECORDING_SENDER_FILE, and fails like a flaky mail server would for some
addresses: `flaky...` fails the first two attempts, `broken...` every attempt."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from services.notification.config import NotificationSettings
from services.notification.senders import ContactDetails, Outgoing

FLAKY_FAILURES = 2


class RecordingSender:
    channel = "test"

    def __init__(self, path: Path) -> None:
        self.path = path

    async def send(self, notification: Outgoing, contact: ContactDetails) -> None:
        fails = (contact.email.startswith("broken")
                 or (contact.email.startswith("flaky") and notification.attempt <= FLAKY_FAILURES))
        with self.path.open("a") as out:
            out.write(json.dumps({"notification_id": notification.notification_id,
                                  "user_id": notification.user_id, "kind": notification.kind,
                                  "attempt": notification.attempt, "email": contact.email,
                                  "ok": not fails}) + "\n")
        if fails:
            raise ConnectionError(f"{contact.email}: mailbox unavailable")


def recording(settings: NotificationSettings) -> RecordingSender:
    return RecordingSender(Path(os.environ["RECORDING_SENDER_FILE"]))


def sends(path: Path) -> list[dict[str, Any]]:
    """What the sender was asked to do so far."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
