"""The aims file `make bench` ends with: verdicts from separate benchmark processes add up,
the latest per aim wins, and clearing starts a new run."""

from pathlib import Path

from bench.common.aims import clear, record, recorded


def test_verdicts_accumulate_latest_per_aim_wins_and_clear_forgets(tmp_path: Path) -> None:
    file = tmp_path / "aims.jsonl"
    assert recorded(file) == []
    record("bus", "consume", measured="0.41x", aim="≥ 0.8x", met=False, file=file)
    record("gateway", "req/s", measured="0.52x", aim="≥ 0.5x", met=True, file=file)
    record("bus", "consume", measured="0.83x", aim="≥ 0.8x", met=True, file=file)
    aims = {(a.bench, a.name): a for a in recorded(file)}
    assert len(aims) == 2
    assert aims[("bus", "consume")].measured == "0.83x"
    assert aims[("bus", "consume")].verdict == "PASS"
    assert aims[("gateway", "req/s")].verdict == "PASS"
    clear(file)
    assert recorded(file) == []
