"""The saga package's errors: one root, one line each."""

from __future__ import annotations


class SagaError(Exception):
    """Root of the saga package's errors."""


class SagaDefinitionError(SagaError):
    """A saga definition that cannot run (no name, duplicate steps, a bad timeout)."""


class UnknownSagaError(SagaError):
    """A saga type this orchestrator has no definition for."""


class SagaNotFoundError(SagaError):
    """No saga instance with this id."""


class SagaStateError(SagaError):
    """The saga is not in a state that allows this (retrying one that is not stuck, say)."""
