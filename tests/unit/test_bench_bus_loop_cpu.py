"""`python -m bench.bus.loop_cpu` drives `EventConsumer`'s batch intake directly: it must keep
working as the consumer changes (it fails loudly when a record goes unhandled)."""

import pytest

from bench.bus.loop_cpu import core, main, messages, typed_raw


def test_both_paths_handle_every_message_and_the_summary_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    msgs = messages(1_200, 128)
    assert typed_raw(msgs) >= 0 and core(msgs) >= 0
    main(["--messages", "600", "--size", "128", "--rounds", "1"])
    assert "core's extra" in capsys.readouterr().out
