"""The test rig: one poller, a hand-moved clock, shared event factories, the CLI in-process,
the token issuer and services as processes."""

from tests.helpers.cli import cli
from tests.helpers.clock import Clock
from tests.helpers.events import (
    OrderPlaced,
    OrderPlacedData,
    OrderPlacedV1,
    OrderPlacedV1Data,
    order_registry,
    placed,
    unique,
)
from tests.helpers.issuer import IssuerProc
from tests.helpers.service import ServiceProc
from tests.helpers.waiting import answers_ok, eventually, tail

__all__ = [
    "Clock",
    "IssuerProc",
    "OrderPlaced",
    "OrderPlacedData",
    "OrderPlacedV1",
    "OrderPlacedV1Data",
    "ServiceProc",
    "answers_ok",
    "cli",
    "eventually",
    "order_registry",
    "placed",
    "tail",
    "unique",
]
