"""`python -m core`: the command line for services built on core (migrations, dead letters,
parked outbox events); `failures` is how a command reports what went wrong in one line."""

from core.commands.failures import database_failures, fail, settings_errors

__all__ = [
    "database_failures",
    "fail",
    "settings_errors",
]
