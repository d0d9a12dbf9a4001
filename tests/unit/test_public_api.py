"""The public surface of `core`, pinned (Temporal's `test_client_exports.py` is the model):
services import these names from these packages, never from the modules below them, so
a module may move without breaking a service. A change here is a change to the API."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

EXPORTS: dict[str, list[str]] = {
    "core.bases": [
        "AppError",
        "BadRequestError",
        "BaseRepository",
        "BaseRouter",
        "BaseService",
        "ConfigurationError",
        "ConflictError",
        "DatabaseDep",
        "Envelope",
        "EventOutbox",
        "FieldError",
        "ForbiddenError",
        "ListEnvelope",
        "NotFoundError",
        "OutboxDep",
        "Page",
        "PageMeta",
        "PageRequest",
        "Permission",
        "Permissions",
        "SessionDep",
        "TooManyRequestsError",
        "UnauthorizedError",
        "ValidationError",
        "allow_if",
        "deny",
        "error_responses",
        "install_exception_handlers",
        "max_page",
    ],
    "core.commands": [
        "database_failures",
        "fail",
        "settings_errors",
    ],
    "core.db": [
        "Database",
        "MigrationError",
        "ServiceBase",
        "SoftDeleteMixin",
        "StringPrimaryKeyMixin",
        "TimestampMixin",
        "UUIDPrimaryKeyMixin",
        "UtcDateTime",
        "run_env",
        "utcnow",
        "uuid7",
    ],
    "core.event_sourcing": [
        "Aggregate",
        "AggregateNotFoundError",
        "AggregateRepository",
        "DuplicateEventError",
        "EventSourcingError",
        "EventStore",
        "EventStoreTables",
        "NO_STREAM",
        "RecordedEvent",
        "Snapshot",
        "SnapshotStore",
        "StreamConflictError",
        "UnhandledEventError",
        "UnreadableEventError",
        "applies",
        "event_store_tables",
    ],
    "core.http": [
        "AiohttpTransport",
        "Auth",
        "CORRELATION_ID_HEADER",
        "CallerOrService",
        "ClientConfig",
        "ExchangeFailedError",
        "ForwardCaller",
        "H1Transport",
        "NoAuth",
        "REQUEST_ID_HEADER",
        "RequestContext",
        "RequestContextMiddleware",
        "Response",
        "ServiceClient",
        "ServiceToken",
        "ServicesDep",
        "TokenProvider",
        "Transport",
        "UpstreamBadResponseError",
        "UpstreamError",
        "UpstreamRejectedError",
        "UpstreamTimeoutError",
        "UpstreamUnavailableError",
        "get_services",
        "install_request_context",
    ],
    "core.messaging": [
        "BaseEvent",
        "ConsumerFailedError",
        "DEFAULT_RETRY",
        "DatabaseIdempotencyStore",
        "DeadLetter",
        "DeadLetterSink",
        "DeserializationError",
        "DomainEvent",
        "EventBus",
        "EventHandler",
        "EventRegistry",
        "EventSerializer",
        "H_ATTEMPTS",
        "H_ERROR",
        "HandlerMiddleware",
        "HandlerRegistry",
        "Headers",
        "InMemoryEventBus",
        "IntegrationEvent",
        "KafkaAdmin",
        "KafkaDeadLetterSink",
        "KafkaEventBus",
        "MessageContext",
        "MessagingError",
        "MessagingTables",
        "OutboxRelay",
        "OutboxWriter",
        "Outcome",
        "PermanentHandlerError",
        "PublishError",
        "Record",
        "RequestReplyClient",
        "RequestResponder",
        "RequestTimeoutError",
        "TopicFollower",
        "UnknownEventTypeError",
        "dlq_topic",
        "inbox_table",
        "messaging_tables",
        "read_topic",
    ],
    "core.projections": [
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
    ],
    "core.resilience": [
        "BreakerConfig",
        "Bulkhead",
        "BulkheadFullError",
        "CallTimeoutError",
        "CircuitBreaker",
        "CircuitOpenError",
        "Decision",
        "FallbackRateLimiter",
        "KeyedRegistry",
        "LocalRateLimiter",
        "Permit",
        "RateLimitPolicy",
        "RateLimiter",
        "RedisRateLimiter",
        "ResilienceError",
        "RetryPolicy",
        "State",
        "rate_limiter",
        "run_with_timeout",
        "timeout",
    ],
    "core.saga": [
        "COMPENSATED",
        "COMPENSATING",
        "COMPENSATION_RETRY",
        "COMPLETED",
        "Compensation",
        "H_SAGA_ID",
        "H_SAGA_STEP",
        "NEEDS_ATTENTION",
        "RUNNING",
        "SAGAS",
        "SagaDefinition",
        "SagaDefinitionError",
        "SagaError",
        "SagaNotFoundError",
        "SagaOrchestrator",
        "SagaRecord",
        "SagaStateError",
        "SagaStep",
        "SagaStore",
        "SagaTables",
        "StepEntry",
        "UnknownSagaError",
        "participant",
        "reply",
        "saga_admin_router",
        "saga_hook",
        "saga_replies",
        "saga_tables",
    ],
    "core.security": [
        "ACCESS_TOKEN_TYPE",
        "ClientCredentials",
        "CurrentPrincipal",
        "CurrentService",
        "CurrentUser",
        "FileKeyStore",
        "JwksClient",
        "KeyManager",
        "KeySource",
        "KeyStore",
        "KeysUnavailableError",
        "LocalKeySource",
        "MemoryKeyStore",
        "OptionalPrincipal",
        "Principal",
        "RETRY_AFTER_SECONDS",
        "Rule",
        "SIGNING_ALGORITHMS",
        "Security",
        "SecurityError",
        "ServiceTokenError",
        "SigningKey",
        "StaticKeySource",
        "StoredKey",
        "TokenIssuer",
        "TokenProvider",
        "TokenRejectedError",
        "TokenVerifier",
        "VerificationKey",
        "client_credentials_from_settings",
        "install_security",
        "owner_or",
        "path_param",
        "require_permission",
        "require_role",
        "security_from_settings",
    ],
    "core.service_registry": [
        "Change",
        "Instance",
        "RecordTrust",
        "RegistryError",
        "ServiceRegistry",
        "encode",
        "kafka_registry",
        "record_trust",
        "registry_from_settings",
    ],
}


@pytest.mark.parametrize("package", sorted(EXPORTS))
def test_each_package_exports_exactly_its_public_names(package: str) -> None:
    module = importlib.import_module(package)
    assert sorted(module.__all__) == EXPORTS[package]
    assert len(set(module.__all__)) == len(module.__all__), "a name exported twice"
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"{package} names what it does not have: {missing}"
    assert not [name for name in module.__all__ if name.startswith("_")], "a private name"



ROOT = Path(__file__).resolve().parents[2]


def deep_core_imports(folder: str) -> list[str]:
    """`from core.a.b import ...` lines (anything below a core package) in `folder`."""
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.ImportFrom) and node.module
                    and node.module.startswith("core.") and node.module.count(".") > 1):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}")
            elif isinstance(node, ast.Import):
                found += [f"{path.relative_to(ROOT)}:{node.lineno} {alias.name}"
                          for alias in node.names
                          if alias.name.startswith("core.") and alias.name.count(".") > 1]
    return found


@pytest.mark.parametrize("folder", ["services", "gateway"])
def test_services_and_the_gateway_import_core_by_its_packages(folder: str) -> None:
    assert deep_core_imports(folder) == []
