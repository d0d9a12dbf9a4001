"""Passwords: Argon2id off the event loop, the password policy, and email normalisation.

Hashing costs tens of milliseconds of CPU and `memory_kib` of memory by design, so it runs in
threads (argon2-cffi releases the GIL), at most `concurrency` at once: a login flood queues
here instead of starving the event loop or exhausting memory.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import string

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from core.bases import FieldError, ValidationError
from core.runtime import RuntimeKey

PASSWORD_MIN, PASSWORD_MAX = 10, 128
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s.]{2,}$")


class Passwords:
    """Argon2id hashing and verifying, bounded; safe for concurrent use from one loop."""

    def __init__(self, *, time_cost: int, memory_kib: int, parallelism: int,
                 concurrency: int) -> None:
        self.hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib,
                                     parallelism=parallelism)
        self._slots = asyncio.Semaphore(concurrency)
        # Verified against when the email is unknown: the same work, so the same time.
        self._dummy = self.hasher.hash(secrets.token_urlsafe(16))

    @property
    def parameters(self) -> str:
        p = self.hasher
        return (f"argon2id t={p.time_cost} m={p.memory_cost} KiB p={p.parallelism}")

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self.hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        """Whether `password` matches `stored`; with no stored hash (an unknown account) it
        spends a verification all the same and answers False."""
        async with self._slots:
            return await asyncio.to_thread(self._verify, stored, password)

    def _verify(self, stored: str | None, password: str) -> bool:
        try:
            return self.hasher.verify(stored or self._dummy, password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        """The hash was made with other parameters than today's (checked at login)."""
        try:
            return self.hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return True


def normalise_email(raw: str) -> str:
    """Trimmed and lower-cased, local part included.

    RFC 5321 lets a mail server tell `Ann@` from `ann@`, but no common provider does, and
    users type their address with varying case; two accounts that differ only by case would
    be a confusion (or takeover) waiting to happen. Nothing else is rewritten: dots and
    `+tags` mean different things at different providers."""
    email = raw.strip().lower()
    if len(email) > 254 or not _EMAIL.match(email):
        raise ValidationError.for_field("email", "not an email address", code="email")
    return email


def check_password(password: str, email: str, field: str = "password") -> None:
    """The policy: 10 to 128 characters, at least two kinds of character (lower case, upper
    case, digits, others), and not the email or its local part. Every broken rule is named."""
    reasons = []
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        reasons.append((f"must be {PASSWORD_MIN} to {PASSWORD_MAX} characters", "length"))
    classes = {_class_of(ch) for ch in password}
    if len(classes) < 2:
        reasons.append(("must mix at least two of lower case, upper case, digits, symbols",
                        "too_simple"))
    lowered = password.strip().lower()
    if lowered in (email, email.split("@", 1)[0]):
        reasons.append(("must not be the email address", "same_as_email"))
    if reasons:
        raise ValidationError(
            "The password does not meet the policy: " + "; ".join(r for r, _ in reasons),
            fields=[FieldError(field, reason, code, "body") for reason, code in reasons])


def _class_of(ch: str) -> str:
    if ch.islower():
        return "lower"
    if ch.isupper():
        return "upper"
    return "digit" if ch in string.digits else "other"


def generate_password() -> str:
    """A strong random password that meets the policy (for `create-admin`)."""
    return secrets.token_urlsafe(24) + "-A1a"


PASSWORDS = RuntimeKey("passwords", Passwords)
"""The service's one hasher (its concurrency bound is per process)."""
