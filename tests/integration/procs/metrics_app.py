"""`python -m tests.integration.procs.metrics_app PORT`: the sample service plus a probe
topic (`PROBE_TOPIC`) whose handler fails for good on a widget named "poison" (retried, then
dead-lettered) and waits on "block" until POST /probe/release: causes for every event metric."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import uvicorn
from fastapi import APIRouter, FastAPI

from core.app import Subscription, create_service
from core.messaging.handlers import HandlerRegistry
from core.messaging.types import MessageContext
from tests.sample_service.app import SERVICE_DIR, handlers, router
from tests.sample_service.events import WidgetDeleted
from tests.sample_service.models import Base
from tests.sample_service.service import WidgetService

probe = HandlerRegistry(handlers.events)
released = asyncio.Event()
controls = APIRouter()


@probe.handles(WidgetDeleted, name="probe.deleted")
async def deleted(event: WidgetDeleted, ctx: MessageContext) -> None:
    if event.data.sku == "poison":
        raise RuntimeError("poison widget")
    if event.data.sku == "block":
        await released.wait()


@controls.post("/probe/release")
async def release() -> None:
    released.set()


def app() -> FastAPI:
    return create_service(
        "metrics-probe", metadata=Base.metadata, service_dir=SERVICE_DIR,
        events=handlers.events, routers=[router, controls],
        subscriptions=[Subscription(WidgetService.events_topic, handlers),
                       Subscription(os.environ["PROBE_TOPIC"], probe)],
        publishes=[WidgetService.events_topic])


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(name)s: %(message)s")
    os.environ.setdefault("SERVICE_PORT", sys.argv[1])
    uvicorn.run(app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="info")
