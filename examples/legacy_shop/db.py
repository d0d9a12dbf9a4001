"""One engine per app, one session per request (FastAPI's dependency)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from examples.legacy_shop.models import Base


def open_database(url: str) -> sessionmaker[Session]:
    """The shop's tables created if missing (the legacy way: no migrations)."""
    engine: Engine = create_engine(url)
    Base.metadata.create_all(engine)
    return sessionmaker(engine, expire_on_commit=False)


def session(request: Request) -> Iterator[Session]:
    factory: sessionmaker[Session] = request.app.state.sessions
    with factory() as db:
        yield db


SessionDep = Annotated[Session, Depends(session)]
