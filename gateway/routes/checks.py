"""Checks of single route table values: each returns what is wrong (a phrase for the
error message), or None when the value is fine. Pure functions, so the table loader in
`gateway.routes.file` only walks the file and says where each problem is."""

from __future__ import annotations

import re

from core.resilience import RateLimitPolicy

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods a route may list. CONNECT means nothing to a reverse proxy and TRACE would echo
credentials back (cross-site tracing), so neither is routable."""

MAX_TIMEOUT = 300.0
MAX_RETRIES = 5

SERVICE_NAME = re.compile(r"[a-z][a-z0-9-]*")
ROUTE_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
PERMISSION = re.compile(r"[a-z][a-z0-9_-]{0,47}:[a-z][a-z0-9_-]{0,47}")
"""`resource:action`, as the auth service issues them: a permission it cannot issue would
lock every caller out of the route."""

_PATH_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/]*")
"""RFC 3986 path characters, less `%`: prefixes are compared with the decoded path."""
_RATE = re.compile(r"([0-9]+)/([0-9]+(?:\.[0-9]+)?)")


def path_problem(value: str) -> str | None:
    """Whether `value` can be a route prefix (or rewrite): an absolute path of whole
    segments, literal, without a trailing "/" (unless it is "/")."""
    if not value.startswith("/"):
        return f'{value!r} must start with "/"'
    for bad, why in (("//", "an empty segment"), ("..", "dot segments are not allowed"),
                     ("?", "a query"), ("#", "a fragment")):
        if bad in value:
            return f"{value!r} contains {bad!r} ({why}): give a plain path"
    if "." in value.split("/"):
        return f'{value!r} contains a "." segment: give a plain path'
    if value != "/" and value.endswith("/"):
        return (f'{value!r} ends with "/": drop it ({value.rstrip("/")!r} matches '
                "that path and every path below it)")
    if not _PATH_CHARS.fullmatch(value):
        char = next(c for c in value if not _PATH_CHARS.fullmatch(c))
        hint = " (prefixes are literal, not templates)" if char in "{}<>" else ""
        return f"{value!r} contains {char!r}, which a path may not{hint}"
    return None


def parse_rate_limit(text: str, name: str) -> RateLimitPolicy | None:
    """`"limit/window_seconds"` as the policy `name`; `"none"` (or "") as no limit.
    Raises ValueError saying what is wrong."""
    if text in ("none", ""):
        return None
    found = _RATE.fullmatch(text)
    if found is None:
        raise ValueError(f'{text!r} is not "limit/window_seconds" (such as "600/60") '
                         'nor "none"')
    limit, window = int(found[1]), float(found[2])
    if limit < 1:
        raise ValueError(f"{text!r}: the limit must be at least 1")
    if window <= 0:
        raise ValueError(f"{text!r}: the window must be more than 0 seconds")
    return RateLimitPolicy(name=name, limit=limit, window=window)


def timeout_problem(value: float) -> str | None:
    if not 0 < value <= MAX_TIMEOUT:
        return f"{value!r} must be more than 0 and at most {MAX_TIMEOUT:g} seconds"
    return None


def retries_problem(value: int) -> str | None:
    if not 0 <= value <= MAX_RETRIES:
        return f"{value!r} must be between 0 and {MAX_RETRIES}"
    return None


def methods_problem(value: str) -> str | None:
    if value in HTTP_METHODS:
        return None
    if value.upper() in HTTP_METHODS:
        return f"{value!r}: methods are upper-case ({value.upper()!r})"
    return f"{value!r} is not an HTTP method a route may use ({', '.join(sorted(HTTP_METHODS))})"


def name_problem(value: str, pattern: re.Pattern[str], what: str) -> str | None:
    if pattern.fullmatch(value):
        return None
    return f"{value!r} is not a valid {what} (it must match {pattern.pattern})"
