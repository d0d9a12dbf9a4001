"""The proxy's rules without processes: which paths are refused, which headers pass, how an
upstream failure becomes the client's answer."""

from __future__ import annotations

import pytest

from core.http import UpstreamBadResponseError, UpstreamTimeoutError, UpstreamUnavailableError
from gateway.errors import GatewayError
from gateway.forwarding import check_path
from gateway.proxy import _refusal, _request_headers


@pytest.mark.parametrize("path", [
    "/api/users/me", "/api/.well-known/jwks.json", "/api/a.b/c..d/...", "/", "/api/é",
])
def test_plain_paths_pass(path: str) -> None:
    check_path(path, path.encode())


@pytest.mark.parametrize(("path", "raw"), [
    ("/api/users/../auth", None), ("/api/users/..", None), ("/api/./x", None),
    ("/api//x", None), ("/api\\x", None), ("api/x", None), ("/api/x\x00", None),
    ("/api/x\n", None), ("/api/a/b", b"/api/a%2Fb"), ("/api/a\\b", b"/api/a%5cb"),
    ("/api/a", b"/api/a%00"),
])
def test_ambiguous_paths_are_400(path: str, raw: bytes | None) -> None:
    with pytest.raises(GatewayError) as refused:
        check_path(path, raw)
    assert refused.value.status == 400 and refused.value.code == "bad_path"


def test_hop_by_hop_identity_and_forwarding_headers_are_dropped() -> None:
    kept, length, chunked = _request_headers([
        (b"host", b"gw"), (b"connection", b"keep-alive, x-hop"), (b"x-hop", b"1"),
        (b"te", b"trailers"), (b"keep-alive", b"5"), (b"x-authenticated-subject", b"admin"),
        (b"x-forwarded-for", b"6.6.6.6"), (b"x-request-id", b"r"), (b"content-length", b"12"),
        (b"accept", b"a"), (b"accept", b"b"), (b"authorization", b"Bearer t"),
    ])
    assert kept == [("accept", "a"), ("accept", "b"), ("authorization", "Bearer t")]
    assert length == 12 and not chunked
    _, length, chunked = _request_headers([(b"transfer-encoding", b"chunked")])
    assert length is None and chunked


@pytest.mark.parametrize("value", [b"-1", b"1e3", b"12 ", b"", b"9" * 19])
def test_a_bad_content_length_is_400(value: bytes) -> None:
    with pytest.raises(GatewayError) as refused:
        _request_headers([(b"content-length", value)])
    assert refused.value.status == 400


def test_upstream_failures_become_502_503_504() -> None:
    unavailable = _refusal(UpstreamUnavailableError("svc", "down", retry_after=3))
    assert (unavailable.status, unavailable.code) == (503, "upstream_unavailable")
    assert unavailable.headers["Retry-After"] == "3"
    assert _refusal(UpstreamUnavailableError("svc")).headers["Retry-After"] == "1"
    timeout = _refusal(UpstreamTimeoutError("svc"))
    assert (timeout.status, timeout.code) == (504, "upstream_timeout")
    assert _refusal(UpstreamBadResponseError("svc", status=500)).status == 502
    assert _refusal(UpstreamBadResponseError("svc", status=503)).status == 503
    assert "svc" in _refusal(UpstreamBadResponseError("svc", "secret detail")).message
    assert "secret detail" not in _refusal(UpstreamBadResponseError("svc", "secret detail")).message
