"""`python -m core events check`: the rules on real pydantic models (a released v1 of
`shop.item_added`, then the code changed), and the repository's own services against the
committed snapshot (contracts/events/)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from typer.testing import CliRunner

from core.commands.cli import app
from core.commands.event_catalog import ServiceEvents, collect
from core.commands.event_contracts import SNAPSHOT_DIR, check, current, read_snapshot
from core.messaging import EventRegistry, IntegrationEvent

ROOT = Path(__file__).resolve().parents[2]


class Sku(BaseModel):
    code: str


class ItemData(BaseModel):
    item_id: str
    quantity: int
    sku: Sku


class ItemAdded(IntegrationEvent[ItemData]):
    EVENT_TYPE = "shop.item_added"


def shop(*events: type[IntegrationEvent[Any]], registry: EventRegistry | None = None,
         handles: tuple[str, int] | None = None) -> ServiceEvents:
    service = ServiceEvents("shop", {(e.EVENT_TYPE, e.EVENT_VERSION): e for e in events})
    if registry is not None:
        service.registries.append(registry)
    if handles is not None:
        service.handled.add(handles)
    return service


RELEASED = current([shop(ItemAdded)])


def test_an_unchanged_contract_passes() -> None:
    assert check(RELEASED, [shop(ItemAdded)]) == []


def test_a_removed_field_fails_naming_it() -> None:
    class Data(BaseModel):
        item_id: str
        sku: Sku

    class Changed(IntegrationEvent[Data]):
        EVENT_TYPE = "shop.item_added"

    assert check(RELEASED, [shop(Changed)]) == [
        "shop: shop.item_added v1: field 'data.quantity' was removed"]


def test_a_retyped_field_fails_naming_it_also_inside_a_nested_model() -> None:
    class Code(BaseModel):  # another name for the nested model: only its shape counts
        code: int

    class Data(BaseModel):
        item_id: str
        quantity: str
        sku: Code

    class Changed(IntegrationEvent[Data]):
        EVENT_TYPE = "shop.item_added"

    problems = check(RELEASED, [shop(Changed)])
    assert [p.split(" was retyped")[0] for p in problems] == [
        "shop: shop.item_added v1: field 'data.quantity'",
        "shop: shop.item_added v1: field 'data.sku.code'"]
    assert '{"type": "integer"} -> {"type": "string"}' in problems[0]


def test_a_new_required_field_fails_naming_it() -> None:
    class Data(ItemData):
        price: int

    class Changed(IntegrationEvent[Data]):
        EVENT_TYPE = "shop.item_added"

    assert check(RELEASED, [shop(Changed)]) == [
        "shop: shop.item_added v1: field 'data.price' is new and required"]


def test_a_new_optional_field_passes() -> None:
    class Data(ItemData):
        price: int | None = None
        tags: list[str] = []

    class Changed(IntegrationEvent[Data]):
        EVENT_TYPE = "shop.item_added"

    assert check(RELEASED, [shop(Changed)]) == []


class DataV2(BaseModel):
    item_id: str
    quantity: float
    """Retyped and required: a breaking change, allowed only at a new version."""


class ItemAddedV2(IntegrationEvent[DataV2]):
    EVENT_TYPE = "shop.item_added"
    EVENT_VERSION = 2


def test_a_breaking_new_version_with_an_upcaster_passes() -> None:
    registry = EventRegistry()

    @registry.upcaster("shop.item_added", from_version=1)
    def lift(data: dict[str, Any]) -> dict[str, Any]:
        return {"item_id": data["item_id"], "quantity": float(data["quantity"])}

    assert check(RELEASED, [shop(ItemAddedV2, registry=registry)]) == []  # v1 gone: upcast
    assert check(RELEASED, [shop(ItemAdded, ItemAddedV2, registry=registry)]) == []


def test_a_breaking_new_version_without_an_upcaster_fails() -> None:
    gone = check(RELEASED, [shop(ItemAddedV2)])  # v1's records left without a reader
    assert gone[0] == "shop: shop.item_added v1: no upcaster v1 -> v2"
    kept = check(RELEASED, [shop(ItemAdded, ItemAddedV2)])
    assert kept == gone[1:]
    assert [p.split(" was ")[0] for p in kept] == [
        "shop: shop.item_added v2: field 'data.quantity'",
        "shop: shop.item_added v2: field 'data.sku'"]
    assert kept[0] == ("shop: shop.item_added v2: field 'data.quantity' was retyped: "
                       '{"type": "integer"} -> {"type": "number"}, breaking v1, and there is '
                       "no upcaster v1 -> v2")


def test_a_removed_event_type_fails() -> None:
    assert check(RELEASED, [shop()]) == [
        "shop: shop.item_added v1: was removed (no newer version replaces it)"]


def test_an_event_handled_that_no_service_publishes_is_named() -> None:
    assert check(RELEASED, [shop(ItemAdded, handles=("shop.item_added", 1))]) == []
    assert check(RELEASED, [shop(ItemAdded, handles=("shop.item_removed", 1))]) == [
        "shop: handles shop.item_removed, which no service publishes (orphan)"]
    assert check(RELEASED, [shop(ItemAdded, handles=("shop.item_added", 3))]) == [
        "shop: handles shop.item_added v3, which no service publishes (orphan; published: v1)"]


def test_the_services_match_the_committed_snapshot() -> None:
    services = collect(ROOT)
    assert {s.name for s in services} >= {"auth", "order", "user"}
    assert any(s.handled for s in services)  # the consumer side is read, not empty
    assert check(read_snapshot(ROOT / SNAPSHOT_DIR), services) == []


def test_the_command_fails_on_a_snapshot_the_code_breaks(tmp_path: Path) -> None:
    """The real command on the real services: passes, then fails when the released
    `order.placed` had a field the code has not (as if the code had removed it)."""
    runner = CliRunner()
    ok = runner.invoke(app, ["events", "check", "--root", str(ROOT)])
    assert ok.exit_code == 0, ok.output
    snapshot = tmp_path / "events"
    shutil.copytree(ROOT / SNAPSHOT_DIR, snapshot)
    file = snapshot / "order.json"
    doc = json.loads(file.read_text())
    data = doc["events"]["order.placed"]["1"]["$defs"]["OrderPlacedData"]
    data["properties"]["fare"] = {"type": "integer"}
    file.write_text(json.dumps(doc))
    broken = runner.invoke(app, ["events", "check", "--root", str(ROOT),
                                 "--snapshot", str(snapshot)])
    assert broken.exit_code == 1
    assert "order: order.placed v1: field 'data.fare' was removed" in broken.output
