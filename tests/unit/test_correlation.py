"""`core.correlation`: ids bound for a block and restored after it, stamped on events that name
none (their own win), and put on log lines."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

from core import correlation
from core.correlation import NO_ID, Correlation, CorrelationLogFilter
from core.messaging.events import correlated
from tests.helpers import placed


def test_bound_ids_are_current_inside_the_block_and_the_outer_ones_come_back() -> None:
    assert correlation.current() is None
    with correlation.bound("c-1"):
        assert correlation.current() == Correlation("c-1", None)
        with correlation.bound("c-2", "e-2"):
            assert correlation.current() == Correlation("c-2", "e-2")
        assert correlation.current() == Correlation("c-1", None)
    assert correlation.current() is None
    token = correlation.bind("c-3", "e-3")
    assert correlation.current() == Correlation("c-3", "e-3")
    correlation.unbind(token)
    assert correlation.current() is None


def test_an_event_gets_the_current_ids_where_it_names_none_and_keeps_its_own() -> None:
    bare = placed("o-1")
    assert correlated(bare) is bare  # outside any correlation: unchanged
    with correlation.bound("req-1", "evt-1"):
        filled = correlated(bare)
        assert (filled.correlation_id, filled.causation_id) == ("req-1", "evt-1")
        assert filled.event_id == bare.event_id and filled.data == bare.data
        own = bare.model_copy(update={"correlation_id": "mine", "causation_id": "my-cause"})
        assert correlated(own) is own
        half = correlated(bare.model_copy(update={"correlation_id": "mine"}))
        assert (half.correlation_id, half.causation_id) == ("mine", "evt-1")
    with correlation.bound("req-2"):  # in an HTTP request: no event caused it
        from_request = correlated(bare)
        assert (from_request.correlation_id, from_request.causation_id) == ("req-2", None)


def test_the_log_filter_puts_the_ids_on_every_line() -> None:
    record = logging.LogRecord("svc", logging.INFO, __file__, 1, "hello", None, None)
    line = logging.Formatter("%(correlation_id)s %(causation_id)s %(message)s")
    log_filter = CorrelationLogFilter()
    assert log_filter.filter(record)
    assert line.format(record) == f"{NO_ID} {NO_ID} hello"
    with correlation.bound("req-1"):
        log_filter.filter(record)
        assert line.format(record) == f"req-1 {NO_ID} hello"
    with correlation.bound("req-1", "evt-1"):
        log_filter.filter(record)
        assert line.format(record) == "req-1 evt-1 hello"


def test_a_served_process_logs_each_line_with_the_ids_bound_when_it_was_logged() -> None:
    """`core.serving.configure_logging`, as `serve` calls it, in a process of its own (it sets
    up the root logger); its stdout is a pipe, so the lines are JSON."""
    script = (
        "import logging\n"
        "from core import correlation\n"
        "from core.serving import configure_logging\n"
        "configure_logging()\n"
        "log = logging.getLogger('svc')\n"
        "log.info('outside')\n"
        "with correlation.bound('req-1', 'evt-1'):\n"
        "    log.info('inside')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(line["logger"], line["message"], line.get("correlation_id"),
             line.get("causation_id")) for line in lines] == [
        ("svc", "outside", None, None), ("svc", "inside", "req-1", "evt-1")], done.stderr
