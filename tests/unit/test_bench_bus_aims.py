"""`bench.bus` records issue 24's consume and publish aims from the medians it measured: the
ratio to typed raw in the same run, PASS from 0.8x, nothing when typed raw was not run."""

from pathlib import Path

from bench.bus.aims import record_aims
from bench.bus.results import ContenderRun
from bench.bus.runner import ConsumeResult, PublishResult
from bench.common.aims import recorded


def run(key: str, consume: list[float], publish: list[float]) -> ContenderRun:
    contender = ContenderRun(key, key, "")
    contender.consume = [ConsumeResult(rate, 1.0, 0.1, None) for rate in consume]
    contender.publish = [PublishResult(rate, 1.0) for rate in publish]
    return contender


def test_the_medians_ratio_to_typed_raw_decides(tmp_path: Path) -> None:
    file = tmp_path / "aims.jsonl"
    runs = {"core": run("core", [40_000, 79_000, 90_000], [25_000, 24_000, 26_000]),
            "typed": run("typed", [100_000, 99_000, 101_000], [31_000, 30_000, 29_000])}
    found = {a.name: a for a in record_aims(runs, file)}
    consume, publish = found["consume msg/s vs typed raw"], found["publish msg/s vs typed raw"]
    assert consume.measured == "0.79x of typed raw (79,000 vs 100,000 msg/s)"
    assert not consume.met and consume.aim == "≥ 0.8x"
    assert publish.met and publish.measured.startswith("0.83x")
    assert {a.name for a in recorded(file)} == set(found)


def test_nothing_is_recorded_without_typed_raw_or_after_a_failed_metric(tmp_path: Path) -> None:
    file = tmp_path / "aims.jsonl"
    assert record_aims({"core": run("core", [1.0], [1.0])}, file) == []
    failed = run("core", [1.0], [1.0])
    failed.errors["consume"] = "boom"
    found = record_aims({"core": failed, "typed": run("typed", [1.0], [1.0])}, file)
    assert [a.name for a in found] == ["publish msg/s vs typed raw"]
