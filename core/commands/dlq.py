"""`python -m core dlq list|replay TOPIC`: inspect dead letters and send them back."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from core.commands.failures import fail, first_line, settings_kafka
from core.config import KafkaConfig
from core.messaging import dlq
from core.messaging.kafka_client import KafkaProducer

app = typer.Typer(help="Dead letters: list them with their errors, replay them.",
                  no_args_is_help=True)
console = Console()

Topic = Annotated[str, typer.Argument(help="The original topic (not the .dlq one).")]


def _when(letter: dlq.DeadLetter) -> str:
    raw = letter.record.header(dlq.H_FAILED_AT)
    if not raw or not raw.isdigit():
        return "?"
    return dt.datetime.fromtimestamp(int(raw) / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


@app.command("list")
def list_(
    topic: Topic,
    all_: Annotated[bool, typer.Option("--all", help="Include replayed.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array, for scripts.")]
    = False,
) -> None:
    """List dead letters of TOPIC with the error that put them there."""
    config = settings_kafka()
    with _kafka_failures(config, f"read {dlq.dlq_topic(topic)}"):
        letters = asyncio.run(dlq.list_dead_letters(config, topic))
    shown = [x for x in letters if all_ or not x.replayed]
    if as_json:
        typer.echo(json.dumps([x.as_dict() for x in shown], indent=2))
        return
    table = Table(title=f"{dlq.dlq_topic(topic)}: {len(shown)} shown, {len(letters)} in all")
    for column in ("partition/offset", "failed at", "event", "attempts", "error", "replayed"):
        table.add_column(column, overflow="fold")
    for x in shown:
        table.add_row(
            f"{x.record.partition}/{x.record.offset}", _when(x),
            f"{x.event_type or '?'} {x.event_id or ''}", str(x.attempts),
            f"{x.error_type.rsplit('.', 1)[-1]}: {x.error}", "yes" if x.replayed else "",
        )
    console.print(table)


@app.command()
def replay(
    topic: Topic,
    offset: Annotated[list[str] | None, typer.Option(
        help="PARTITION:OFFSET of a dead letter to replay (repeatable); default: all pending.")]
    = None,
) -> None:
    """Send dead letters back to TOPIC; idempotent handlers make a repeat harmless."""
    picks = None
    if offset:
        try:
            picks = [(int(p), int(o)) for p, o in (x.split(":", 1) for x in offset)]
        except ValueError as exc:
            raise typer.BadParameter("use PARTITION:OFFSET, e.g. 0:42",
                                     param_hint="--offset") from exc
    config = settings_kafka()
    with _kafka_failures(config, f"replay {dlq.dlq_topic(topic)} to {topic}"):
        replayed = asyncio.run(_replay(config, topic, picks))
    console.print(f"replayed {len(replayed)} dead letter(s) to {topic}")


async def _replay(config: KafkaConfig, topic: str,
                  picks: list[tuple[int, int]] | None) -> list[dlq.DeadLetter]:
    producer = KafkaProducer(config)
    await producer.start()
    try:
        return await dlq.replay(config, producer, topic, offsets=picks)
    finally:
        await producer.stop()



@contextmanager
def _kafka_failures(config: KafkaConfig, doing: str) -> Iterator[None]:
    """Any failure talking to the broker as one line naming the setting. The Kafka client's
    own exception types stay behind kafka_client, so this catches broadly, at the edge."""
    try:
        yield
    except Exception as exc:
        raise fail(f"could not {doing} at Kafka {config.bootstrap_servers} "
                   f"({first_line(exc)}): check KAFKA_BOOTSTRAP_SERVERS") from exc
