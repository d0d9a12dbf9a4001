"""CQRS read models: projections that keep query tables up to date from Kafka topics.

A service declares a `Projection` at import (its topics, its tables, an apply function per
event type), declares `positions_table(Base.metadata)` beside its tables so its migrations
create them, and passes the projections to `create_service(projections=[...])`, which runs
each (`ProjectionRunner`) for the service's life with a health check. `python -m core
projections list|rebuild` shows their positions and rebuilds one from the beginning. See
docs/projections.md.

The public surface (pinned by `tests/unit/test_public_api.py`): services import from here.
"""

from core.projections.errors import (
    PositionConflictError,
    ProjectionError,
    ProjectionSetupError,
    RebuildFailedError,
)
from core.projections.positions import positions_table
from core.projections.projection import Apply, Projection, View
from core.projections.rebuild import RebuildReport, rebuild
from core.projections.runner import ProjectionRunner

__all__ = [
    "Apply",
    "PositionConflictError",
    "Projection",
    "ProjectionError",
    "ProjectionRunner",
    "ProjectionSetupError",
    "RebuildFailedError",
    "RebuildReport",
    "View",
    "positions_table",
    "rebuild",
]
