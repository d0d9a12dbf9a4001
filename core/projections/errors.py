"""The projections' errors: one root, one line each."""

from __future__ import annotations


class ProjectionError(Exception):
    """Root of the projection errors."""


class ProjectionSetupError(ProjectionError):
    """A projection is declared or wired wrongly (a missing table, a duplicate name)."""


class PositionConflictError(ProjectionError):
    """The stored position is not where this runner left it (a rebuild swapped, another
    instance applied): the runner re-reads the positions and carries on from there."""


class RebuildFailedError(ProjectionError):
    """A rebuild met an event it could not apply; nothing was swapped in."""
