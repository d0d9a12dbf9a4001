"""`python -m bench.jwt` (part of `make bench`): JWT verifications per second, by algorithm.

Four ways through the same token, in one run, one core, medians of `--rounds` rounds:

- cryptography: the bare signature check of the token's signing input (the floor: what any
  verifier must pay);
- PyJWT decode: `jwt.decode` with the parsed key (PyJWK) and the same claim checks;
- TokenVerifier: core.security's whole path (size, header, allow-list, kid lookup, PyJWT,
  claims, the Principal), from a key source in memory;
- TokenVerifier, new key per call: what parsing the JWKS on every request would cost (the
  thing the verifier's per-kid cache avoids).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import time
from collections.abc import Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from rich.console import Console
from rich.table import Table

from core.security import ACCESS_TOKEN_TYPE, StaticKeySource, TokenVerifier
from core.security.jwks import parse_jwks
from core.security.keys import SigningKey

console = Console(width=120)
ISSUER, AUDIENCE = "https://auth.bench", "platform"
ALGORITHMS = ("EdDSA", "ES256", "RS256")


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _token(key: SigningKey) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "iat": now, "nbf": now,
              "exp": now + 3600, "jti": "j", "kind": "user", "roles": ["driver"],
              "permissions": ["drivers:read", "drivers:write"]}
    return jwt.encode(claims, key.private_key, algorithm=key.alg,
                      headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYPE})


def _raw_verifier(key: SigningKey, token: str) -> Callable[[], None]:
    """The bare signature check, as cryptography does it."""
    head, payload, sig = token.split(".")
    data, signature = f"{head}.{payload}".encode(), _b64decode(sig)
    public: Any = key.private_key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        return lambda: public.verify(signature, data)
    if isinstance(public, ec.EllipticCurvePublicKey):
        half = len(signature) // 2
        der = encode_dss_signature(int.from_bytes(signature[:half]),
                                   int.from_bytes(signature[half:]))
        algorithm = ec.ECDSA(hashes.SHA256())
        return lambda: public.verify(der, data, algorithm)
    assert isinstance(public, rsa.RSAPublicKey)
    return lambda: public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())


def _per_second(call: Callable[[], Any], seconds: float) -> float:
    count, started = 0, time.perf_counter()
    deadline = started + seconds
    while True:
        for _ in range(50):
            call()
        count += 50
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - started)


def _sync(verifier: TokenVerifier, token: str) -> Callable[[], Any]:
    """Drive the async verify without an event loop per call: its key source never suspends,
    so one `send(None)` runs it to the end (what a running loop would do, minus scheduling)."""

    def call() -> Any:
        coroutine = verifier.verify(token)
        try:
            coroutine.send(None)
        except StopIteration as done:
            return done.value
        raise RuntimeError("the verifier suspended")

    return call


def measure(alg: str, seconds: float, rounds: int) -> dict[str, float]:
    key = SigningKey.generate(alg, now=time.time())
    token = _token(key)
    verifier = TokenVerifier(StaticKeySource([key.verification]), issuer=ISSUER,
                             audience=AUDIENCE)
    options: Any = {"require": ["exp", "iat", "iss", "aud", "sub"]}
    jwks_document = {"keys": [key.public_jwk]}

    def reparsing() -> Any:
        fresh = TokenVerifier(StaticKeySource(parse_jwks(jwks_document).values()),
                              issuer=ISSUER, audience=AUDIENCE)
        return _sync(fresh, token)()

    contenders: dict[str, Callable[[], Any]] = {
        "cryptography": _raw_verifier(key, token),
        "PyJWT decode": lambda: jwt.decode(token, key.verification.jwk, algorithms=[alg],
                                           audience=AUDIENCE, issuer=ISSUER, options=options),
        "TokenVerifier": _sync(verifier, token),
        "JWKS parsed per call": reparsing,
    }
    for call in contenders.values():
        call()  # each one works before it is timed
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, call in contenders.items():  # interleaved: drift hits every contender alike
            samples[name].append(_per_second(call, seconds))
    return {name: statistics.median(values) for name, values in samples.items()}


async def _check_async_path() -> None:
    """The numbers above drive verify() by hand; make sure it also runs on a real loop."""
    key = SigningKey.generate("EdDSA", now=time.time())
    verifier = TokenVerifier(StaticKeySource([key.verification]), issuer=ISSUER,
                             audience=AUDIENCE)
    assert (await verifier.verify(_token(key))).subject == "user-1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.3, help="length of one round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(_check_async_path())
    results = {}
    for alg in ALGORITHMS:
        with console.status(f"{alg}: {args.rounds} rounds of {args.seconds}s per contender..."):
            results[alg] = measure(alg, args.seconds, args.rounds)
    names = list(next(iter(results.values())))
    table = Table(title=f"JWT verifications per second (median of {args.rounds} rounds, "
                        "one core)")
    table.add_column("algorithm")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("TokenVerifier / cryptography", justify="right")
    for alg, rates in results.items():
        table.add_row(alg, *(f"{rates[n]:,.0f}" for n in names),
                      f"{rates['TokenVerifier'] / rates['cryptography']:.0%}")
    console.print(table)


if __name__ == "__main__":
    main()
