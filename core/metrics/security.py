"""Token rejections per rule and JWKS fetches, counted on the verifier and the key client
the app already holds (neither class changes: the verifier's `verify` is wrapped on the
instance, the key client reports each fetch through `on_fetch`)."""

from __future__ import annotations

from functools import wraps

from core.metrics.families import Metrics, process_metrics
from core.security import JwksClient, Principal, TokenRejectedError, TokenVerifier


def count_rejections(verifier: TokenVerifier, metrics: Metrics | None = None) -> None:
    """Count every token `verifier` refuses, by `TokenRejectedError.rule`. Idempotent."""
    if getattr(verifier.verify, "__kfm_counted__", False):
        return
    family = (metrics or process_metrics()).token_rejections
    verify = verifier.verify

    @wraps(verify)
    async def counted(token: str) -> Principal:
        try:
            return await verify(token)
        except TokenRejectedError as exc:
            family.labels(exc.rule).inc()
            raise

    counted.__kfm_counted__ = True  # type: ignore[attr-defined]
    verifier.verify = counted  # type: ignore[method-assign]


def count_fetches(jwks: JwksClient, metrics: Metrics | None = None) -> None:
    """Count `jwks`'s fetches by outcome (ok / error)."""
    family = (metrics or process_metrics()).jwks_refreshes
    ok, error = family.labels("ok"), family.labels("error")
    jwks.on_fetch = lambda succeeded: (ok if succeeded else error).inc()
