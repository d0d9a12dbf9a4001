"""`make up`'s stack as a user runs it: real Kafka, a publisher and a consumer process."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_stack_starts_kafka_and_events_flow_between_processes(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devinfra.stack", "--duration", "20", "--state-dir",
         str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    published = set(re.findall(r"published hello #(\d+)", out))
    handled = set(re.findall(r"handled 'hello #(\d+)", out))
    assert len(handled) >= 5, out[-3000:]
    assert handled <= published
    assert "revoking" in out and out.rstrip().endswith("stopped")  # graceful shutdown
