"""Kept importable for the ~110 test modules that import it; the rig lives in `tests.helpers`."""

from tests.helpers import (
    OrderPlaced,
    OrderPlacedData,
    OrderPlacedV1,
    OrderPlacedV1Data,
    answers_ok,
    cli,
    eventually,
    order_registry,
    placed,
    unique,
)

__all__ = ["OrderPlaced", "OrderPlacedData", "OrderPlacedV1", "OrderPlacedV1Data", "answers_ok",
           "cli", "eventually", "order_registry", "placed", "unique"]
