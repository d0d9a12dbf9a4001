"""The driver service's route dependencies, as `Annotated` aliases over the running service's
parts (its settings, its hooks' location writer and live feed, the bus) and the request's
session."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends

from core.app import RuntimeDep
from core.bases import OutboxDep, SessionDep
from core.http import ServicesDep
from core.messaging import KafkaEventBus
from services.driver.config import DriverSettings
from services.driver.models import Driver
from services.driver.profiles import ProfileCheck
from services.driver.rules import DriverService
from services.driver.stream import LOCATION_HUB, LocationHub
from services.driver.writer import LOCATION_WRITER, LocationWriter

# `async def` though they never await: FastAPI runs a plain `def` dependency in a thread.


async def get_settings(runtime: RuntimeDep) -> DriverSettings:
    return runtime.settings_as(DriverSettings)


async def get_location_writer(runtime: RuntimeDep) -> LocationWriter:
    return runtime[LOCATION_WRITER]


async def get_location_hub(runtime: RuntimeDep) -> LocationHub:
    return runtime[LOCATION_HUB]


async def get_bus(runtime: RuntimeDep) -> KafkaEventBus:
    return runtime.bus


SettingsDep = Annotated[DriverSettings, Depends(get_settings)]
LocationWriterDep = Annotated[LocationWriter, Depends(get_location_writer)]
LocationHubDep = Annotated[LocationHub, Depends(get_location_hub)]
BusDep = Annotated[KafkaEventBus, Depends(get_bus)]


async def get_drivers(session: SessionDep, outbox: OutboxDep) -> DriverService:
    return DriverService(session, outbox)


async def get_profile_check(services: ServicesDep, settings: SettingsDep) -> ProfileCheck:
    return ProfileCheck(services, settings.user_service, settings.user_call_timeout)


DriversDep = Annotated[DriverService, Depends(get_drivers)]
"""The rules over the request's transaction, its events through the outbox."""
ProfileCheckDep = Annotated[ProfileCheck, Depends(get_profile_check)]


async def load_driver(driver_id: uuid.UUID, drivers: DriversDep) -> Driver:
    return await drivers.get(driver_id)


DriverDep = Annotated[Driver, Depends(load_driver)]
"""The driver of the path's `driver_id` (404 when there is none)."""
