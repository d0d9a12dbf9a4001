"""JWT security: issuing (keys, rotation, JWKS), verifying (JWKS client, verifier), FastAPI
dependencies for routes and permissions, and a service's own identity (client credentials)."""

from core.security.deps import (
    CurrentPrincipal,
    CurrentService,
    CurrentUser,
    OptionalPrincipal,
    owner_or,
    path_param,
    require_permission,
    require_role,
)
from core.security.errors import (
    KeysUnavailableError,
    Rule,
    SecurityError,
    ServiceTokenError,
    TokenRejectedError,
)
from core.security.issuer import TokenIssuer
from core.security.jwks import JwksClient, LocalKeySource, StaticKeySource
from core.security.keys import SIGNING_ALGORITHMS, KeyManager, SigningKey
from core.security.keystore import FileKeyStore, KeyStore, MemoryKeyStore, StoredKey
from core.security.service_identity import ClientCredentials, client_credentials_from_settings
from core.security.types import (
    ACCESS_TOKEN_TYPE,
    KeySource,
    Principal,
    TokenProvider,
    VerificationKey,
)
from core.security.verifier import TokenVerifier
from core.security.wiring import (
    RETRY_AFTER_SECONDS,
    Security,
    install_security,
    security_from_settings,
)

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "RETRY_AFTER_SECONDS",
    "SIGNING_ALGORITHMS",
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
    "Rule",
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
]
