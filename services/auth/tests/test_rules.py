"""Unit tests (no I/O): the throttle rule, the password policy, email normalisation, and the
password hasher's answers (dummy hash for unknown accounts, rehash detection)."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from core.bases import ValidationError
from services.auth.config import AuthSettings
from services.auth.passwords import Passwords, check_password, generate_password, normalise_email
from services.auth.throttle.policy import (
    FailureState,
    ThrottlePolicy,
    after_failure,
    retry_after,
    whole_seconds,
)

POLICY = ThrottlePolicy("account", window_seconds=60, slow_after=2, lock_after=4,
                        slow_seconds=1, slow_max_seconds=3, lock_seconds=30)


def test_the_rule_counts_slows_doubles_caps_and_locks() -> None:
    state, now, waits = None, 100.0, []
    for _ in range(5):
        state = after_failure(state, POLICY, now)
        waits.append(retry_after(state, POLICY, now))
    assert waits == [0, 1, 2, 30, 30]
    assert state == FailureState(5, 100.0, 100.0)
    assert retry_after(state, POLICY, 129.5) == 0.5
    assert retry_after(state, POLICY, 130.0) == 0
    assert after_failure(state, POLICY, 130.0) == FailureState(1, 130.0, 130.0)


def test_the_slow_wait_is_capped() -> None:
    state = FailureState(3, 0.0, 10.0)  # 1 s doubled once = 2 s; lock_after is 4
    assert retry_after(state, POLICY, 10.0) == 2
    capped = ThrottlePolicy("x", 60, 1, 100, 1, 3, 30)
    assert retry_after(FailureState(50, 0.0, 10.0), capped, 10.0) == 3


def test_a_window_that_ran_out_forgets() -> None:
    state = FailureState(3, 0.0, 59.0)
    assert retry_after(state, POLICY, 61.0) == 0
    assert after_failure(state, POLICY, 61.0) == FailureState(1, 61.0, 61.0)
    assert after_failure(state, POLICY, 59.5) == FailureState(4, 0.0, 59.5)


def test_policies_and_settings_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        ThrottlePolicy("x", 60, 5, 4, 1, 1, 1)
    with pytest.raises(ValueError):
        ThrottlePolicy("x", 0, 1, 4, 1, 1, 1)
    with pytest.raises(ValueError):
        AuthSettings(account_slow_after=5, account_lock_after=4, _env_file=None)
    assert whole_seconds(0.01) == 1 and whole_seconds(5.0000001) == 5 and whole_seconds(5.2) == 6


def test_emails_are_trimmed_and_lower_cased_and_checked() -> None:
    assert normalise_email("  Ann.Lee+news@Example.COM ") == "ann.lee+news@example.com"
    for bad in ("", "ann", "ann@", "@example.com", "ann@example", "a b@example.com",
                "ann@@example.com", f"{'a' * 65}@example.com"):
        with pytest.raises(ValidationError):
            normalise_email(bad)


@pytest.mark.parametrize(("password", "codes"), [
    ("Sh0rt", {"length"}),
    ("a" * 129 + "B", {"length"}),
    ("onlylowercaseletters", {"too_simple"}),
    ("12345678901", {"too_simple"}),
    ("ann@example.com", {"same_as_email"}),
    ("ANN-is-MY-name", set()),
    ("ann", {"length", "too_simple", "same_as_email"}),
])
def test_the_password_policy_names_every_broken_rule(password: str, codes: set[str]) -> None:
    if not codes:
        check_password(password, "ann@example.com")
        return
    with pytest.raises(ValidationError) as caught:
        check_password(password, "ann@example.com")
    assert {f.code for f in caught.value.fields} == codes
    assert all(f.field == "password" and f.location == "body" for f in caught.value.fields)


def test_generated_passwords_meet_the_policy() -> None:
    for _ in range(20):
        check_password(generate_password(), "ann@example.com")


async def test_the_hasher_verifies_refuses_and_spends_a_hash_on_unknown_accounts() -> None:
    passwords = Passwords(time_cost=1, memory_kib=1024, parallelism=1, concurrency=1)
    stored = await passwords.hash("Correct-horse-1")
    assert stored.startswith("$argon2id$")
    assert await passwords.verify(stored, "Correct-horse-1")
    assert not await passwords.verify(stored, "wrong")
    assert not await passwords.verify(None, "anything"), "no account: False, after a verify"
    assert not await passwords.verify("not a hash", "anything")
    assert not passwords.needs_rehash(stored)
    older = PasswordHasher(time_cost=2, memory_cost=1024, parallelism=1).hash("x")
    assert passwords.needs_rehash(older) and passwords.needs_rehash("garbage")
