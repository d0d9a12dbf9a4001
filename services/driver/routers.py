"""HTTP routes of the driver service: thin; the rules live in rules.py and locations.py.

Who may do what (permissions from the contract): `drivers:register` to become a driver;
`drivers:read` to read any driver (its licence number only shown to the driver and to
`drivers:write`), query nearby drivers and watch a driver's live locations
(a rider app shows the driver coming); a driver's own status and location change only by that
driver (the record's `user_id` is the token's subject) or a holder of `drivers:write`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sse_starlette import EventSourceResponse, ServerSentEvent

from core.bases import (
    AppError,
    DatabaseDep,
    ForbiddenError,
    NotFoundError,
    SessionDep,
    ValidationError,
    error_responses,
)
from core.messaging import MessagingError
from core.security import CurrentPrincipal, CurrentUser, Principal, owner_or, require_permission
from services.driver.deps import (
    BusDep,
    DriverDep,
    DriversDep,
    LocationHubDep,
    LocationWriterDep,
    ProfileCheckDep,
    SettingsDep,
)
from services.driver.events import LOCATIONS_TOPIC, DriverLocationReported, LocationReportedData
from services.driver.geo import encode
from services.driver.handlers import APPLIED_HEADER
from services.driver.locations import Report, find_nearby, latest_location
from services.driver.models import Driver, DriverLocation
from services.driver.rules import DriverService
from services.driver.schemas import (
    DriverCreate,
    DriverPublic,
    LocationPublic,
    LocationReport,
    NearbyDriver,
    NearbyPage,
    StatusChange,
    VehiclePublic,
)

MAX_CLOCK_SKEW = timedelta(seconds=30)
PUBLISH_TIMEOUT = 5.0
"""Seconds a location report waits for Kafka's acknowledgement before a 503 (the producer
would keep trying for minutes; a later duplicate is harmless: the latest report wins)."""

SSE_LOCATION = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["location"]},
        "data": {"type": "string", "contentMediaType": "application/json",
                 "contentSchema": LocationReportedData.model_json_schema()},
    },
}
"""One event of the location stream, as OpenAPI 3.1 describes an SSE event."""

router = APIRouter(prefix="/drivers", tags=["drivers"])


class FeedUnavailableError(AppError):
    """Kafka did not take a location report: stored, but not streamed; send it again."""

    status_code = 503
    code = "feed_unavailable"
    expose = True
    default_message = ("the location was stored but could not be published to the live feed; "
                       "send it again")


async def driver_owner(driver: DriverDep) -> str:
    return driver.user_id


def ensure_may_steer(principal: Principal, driver: Driver) -> None:
    """Only the driver or a holder of `drivers:write` changes a driver's status or location."""
    if not principal.is_user(driver.user_id) and not principal.has_permission("drivers:write"):
        raise ForbiddenError("only the driver or a holder of drivers:write may do this")


def public(driver: Driver, viewer: Principal) -> DriverPublic:
    """The record as `viewer` may see it: the licence number only for the driver and holders
    of `drivers:write` (a rider with `drivers:read` sees the vehicle, not the licence)."""
    shows_licence = (driver.user_id == viewer.subject
                     or viewer.has_permission("drivers:write"))
    return DriverPublic(
        id=driver.id, user_id=driver.user_id,
        licence_number=driver.licence_number if shows_licence else None,
        licence_expiry=driver.licence_expiry, vehicle=vehicle(driver),
        status=driver.status,
        created_at=driver.created_at, updated_at=driver.updated_at)


def vehicle(driver: Driver) -> VehiclePublic:
    return VehiclePublic(make=driver.vehicle_make, model=driver.vehicle_model,
                         plate=driver.vehicle_plate, colour=driver.vehicle_colour,
                         year=driver.vehicle_year)


@router.post("", status_code=201, response_model=DriverPublic,
             dependencies=[Depends(require_permission("drivers:register"))],
             responses=error_responses(400, 401, 403, 409, 422, 502, 503, 504))
async def register(data: DriverCreate, principal: CurrentUser, drivers: DriversDep,
                   check: ProfileCheckDep) -> DriverPublic:
    """Become a driver: one record per user, after the user service confirms the caller's
    profile exists."""
    return public(await drivers.register(principal.subject, data, check), principal)


@router.get("/me", response_model=DriverPublic, responses=error_responses(401, 404))
async def mine(principal: CurrentUser, drivers: DriversDep) -> DriverPublic:
    """The caller's own driver record."""
    driver = await drivers.drivers.by_user(principal.subject)
    if driver is None:
        raise NotFoundError("you are not a driver: register with POST /drivers first")
    return public(driver, principal)


@router.get("/nearby", response_model=NearbyPage,
            dependencies=[Depends(require_permission("drivers:read"))],
            responses=error_responses(401, 403, 422))
async def nearby(
    session: SessionDep, settings: SettingsDep,
    lat: Annotated[float, Query(ge=-90, le=90)],
    lon: Annotated[float, Query(ge=-180, le=180)],
    radius_km: Annotated[float, Query(gt=0, description="At most NEARBY_MAX_RADIUS_KM (50)")] = 5,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> NearbyPage:
    """Available drivers within `radius_km`, nearest first."""
    if radius_km > settings.nearby_max_radius_km:
        raise ValidationError.for_field("radius_km", f"at most {settings.nearby_max_radius_km:g}",
                                        location="query")
    if limit > settings.nearby_max_limit:
        raise ValidationError.for_field("limit", f"at most {settings.nearby_max_limit}",
                                        location="query")
    found = await find_nearby(session, lat, lon, radius_km, limit)
    return NearbyPage(radius_km=radius_km, items=[
        NearbyDriver(driver_id=n.driver.id, user_id=n.driver.user_id, lat=n.location.lat,
                     lon=n.location.lon, distance_km=round(n.distance_km, 4),
                     recorded_at=n.location.recorded_at, vehicle=vehicle(n.driver))
        for n in found])


@router.get("/{driver_id}", response_model=DriverPublic,
            dependencies=[Depends(owner_or("drivers:read", owner_of=driver_owner))],
            responses=error_responses(401, 403, 404, 422))
async def get_driver(driver: DriverDep, principal: CurrentPrincipal) -> DriverPublic:
    return public(driver, principal)


@router.put("/{driver_id}/status", response_model=DriverPublic,
            responses=error_responses(400, 401, 403, 404, 409, 422))
async def set_status(data: StatusChange, principal: CurrentPrincipal, driver: DriverDep,
                     drivers: DriversDep) -> DriverPublic:
    """offline → available → busy → available → offline; a busy driver cannot go offline."""
    ensure_may_steer(principal, driver)
    return public(await drivers.change_status(driver, data.status), principal)


@router.put("/{driver_id}/location", response_model=LocationPublic,
            responses=error_responses(400, 401, 403, 404, 422, 503))
async def report_location(driver_id: uuid.UUID, data: LocationReport,
                          principal: CurrentPrincipal, database: DatabaseDep,
                          writer: LocationWriterDep, bus: BusDep) -> LocationPublic:
    """Store the driver's location (unless a later one is stored) and publish it on
    `driver.locations`, where the live streams and other services read it.

    Why not through the outbox: at a location every few seconds per driver, an outbox row per
    report triples the writes (insert, relay read, mark sent) and delays the stream by a relay
    round; and a location needs no outbox's guarantee, since the next report supersedes a lost
    one. So the row is committed first (batched with the other reports in flight: see
    writer.py; the nearby query sees it at once), then the report is
    produced straight to Kafka and acknowledged before the answer; the record says its row is
    written, so this service's own consumer skips it. If producing fails, the client gets a
    503 and sends again (the row, already there, is kept).
    """
    now = datetime.now(UTC)
    recorded_at = data.recorded_at or now
    if recorded_at > now + MAX_CLOCK_SKEW:
        raise ValidationError.for_field("recorded_at", "is in the future")
    async with database.reads() as session:
        driver = await DriverService(session).get(driver_id)
        ensure_may_steer(principal, driver)
    applied = await writer.write(Report(driver.id, data.lat, data.lon, recorded_at))
    event = DriverLocationReported(aggregate_id=str(driver_id), data=LocationReportedData(
        driver_id=str(driver_id), lat=data.lat, lon=data.lon, recorded_at=recorded_at))
    try:
        async with asyncio.timeout(PUBLISH_TIMEOUT):
            await bus.publish(LOCATIONS_TOPIC, event,
                                      headers=[(APPLIED_HEADER, b"applied")])
    except (MessagingError, TimeoutError) as exc:
        raise FeedUnavailableError() from exc
    if applied:
        return LocationPublic(driver_id=driver.id, lat=data.lat, lon=data.lon,
                              cell=encode(data.lat, data.lon), recorded_at=recorded_at,
                              applied=True)
    async with database.reads() as session:
        stored = await latest_location(session, driver_id)
    assert stored is not None
    return location_public(stored, applied)


def location_public(location: DriverLocation, applied: bool) -> LocationPublic:
    return LocationPublic(driver_id=location.driver_id, lat=location.lat, lon=location.lon,
                          cell=location.cell, recorded_at=location.recorded_at, applied=applied)


@router.get("/{driver_id}/location", response_model=LocationPublic,
            dependencies=[Depends(owner_or("drivers:read", owner_of=driver_owner))],
            responses=error_responses(401, 403, 404, 422))
async def get_location(driver: DriverDep, session: SessionDep) -> LocationPublic:
    """The driver's latest stored location (404 before the first)."""
    stored = await latest_location(session, driver.id)
    if stored is None:
        raise NotFoundError("this driver has reported no location yet")
    return location_public(stored, True)


@router.get("/{driver_id}/locations/stream",
            dependencies=[Depends(require_permission("drivers:read"))],
            responses={200: {"description": "Server-Sent Events: `location` events, whose data is "
                             "a location as JSON, and keep-alive comments",
                             "content": {"text/event-stream": {"schema": SSE_LOCATION}}},
                       **error_responses(401, 403, 404, 422)},
            response_class=EventSourceResponse)
async def stream_locations(driver: DriverDep, principal: CurrentPrincipal, hub: LocationHubDep,
                           settings: SettingsDep, database: DatabaseDep) -> EventSourceResponse:
    """The driver's locations as they are reported, over HTTP or straight to Kafka: first
    the latest stored one (if any), then each new one. Any holder of `drivers:read` may watch
    (the same right that shows the driver in the nearby query). The stream ends when the
    caller's token expires (or after STREAM_MAX_SECONDS); the client reconnects."""
    driver_id = driver.id
    lasts = settings.stream_max_seconds
    expiry = principal.claims.get("exp")
    if isinstance(expiry, int | float):
        lasts = max(0.0, min(lasts, expiry - datetime.now(UTC).timestamp()))

    async def events() -> AsyncIterator[ServerSentEvent]:
        subscription = hub.subscribe(str(driver_id))
        try:
            yield ServerSentEvent(comment="subscribed")
            async with database.reads() as session:
                stored = await latest_location(session, driver_id)
            if stored is not None:
                subscription.offer(LocationReportedData(
                    driver_id=str(driver_id), lat=stored.lat, lon=stored.lon,
                    recorded_at=stored.recorded_at))
            deadline = time.monotonic() + lasts
            while (location := await subscription.get(deadline - time.monotonic())) is not None:
                yield ServerSentEvent(data=location.model_dump_json(), event="location")
        finally:
            hub.unsubscribe(subscription)

    return EventSourceResponse(events(), ping=settings.stream_ping_seconds)
