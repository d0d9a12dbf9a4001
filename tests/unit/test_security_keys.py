"""Signing keys: generation, rotation and retirement, the JWKS, the stores, the issuer."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from core.security import FileKeyStore, KeyManager, MemoryKeyStore, StoredKey, TokenIssuer
from core.security.errors import SecurityError
from core.security.keys import SigningKey, generate_private_key, new_kid
from core.security.keystore import KeyStoreError, check_kid


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def manager(store: Any = None, **options: Any) -> tuple[KeyManager, Clock]:
    clock = Clock()
    built = await KeyManager.open(store or MemoryKeyStore(), clock=clock, **options)
    return built, clock


async def test_opening_an_empty_store_makes_one_eddsa_signer() -> None:
    store = MemoryKeyStore()
    keys, clock = await manager(store)
    assert keys.signer.alg == "EdDSA"
    assert keys.signer.created_at == clock.now
    assert keys.signer.retire_at is None
    assert list(store.keys) == [keys.signer.kid]


async def test_the_default_algorithm_is_configurable() -> None:
    keys, _ = await manager(alg="ES256")
    assert keys.signer.alg == "ES256"


async def test_rotation_makes_a_new_signer_and_retires_the_old_after_the_longest_token() -> None:
    store = MemoryKeyStore()
    keys, clock = await manager(store, max_token_ttl=600, leeway=30)
    old = keys.signer
    clock.now += 10
    new = await keys.rotate()
    assert keys.signer.kid == new.kid != old.kid
    assert store.keys[old.kid].retire_at == clock.now + 630
    assert store.keys[new.kid].retire_at is None
    assert [k.kid for k in keys.keys()] == [new.kid, old.kid]
    assert keys.get(old.kid) is not None
    clock.now += 629
    assert keys.get(old.kid) is not None
    assert await keys.prune() == []
    clock.now += 1
    assert keys.get(old.kid) is None
    assert [k["kid"] for k in keys.jwks()["keys"]] == [new.kid]
    assert await keys.prune() == [old.kid]
    assert list(store.keys) == [new.kid]


async def test_a_retiring_key_keeps_its_date_through_later_rotations() -> None:
    keys, clock = await manager(max_token_ttl=100, leeway=0)
    first = keys.signer
    await keys.rotate()
    clock.now += 50
    await keys.rotate()
    retire = {k.kid: k.retire_at for k in keys.keys()}
    assert retire[first.kid] == clock.now - 50 + 100


async def test_rotation_may_change_the_algorithm() -> None:
    keys, _ = await manager()
    assert (await keys.rotate("RS256")).alg == "RS256"
    assert keys.signer.alg == "RS256"


async def test_the_jwks_holds_public_parts_only() -> None:
    keys, clock = await manager()
    clock.now += 1
    await keys.rotate("ES256")
    clock.now += 1
    await keys.rotate("RS256")
    document = keys.jwks()
    assert [k["alg"] for k in document["keys"]] == ["RS256", "ES256", "EdDSA"]
    for jwk in document["keys"]:
        assert jwk["use"] == "sig"
        assert jwk["kid"]
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(jwk), jwk
        assert jwt.PyJWK(jwk).algorithm_name == jwk["alg"]
    document["keys"].clear()
    assert len(keys.jwks()["keys"]) == 3, "the JWKS is a copy"


async def test_a_new_manager_on_the_same_store_has_the_same_keys() -> None:
    store = MemoryKeyStore()
    first, _ = await manager(store)
    await first.rotate()
    second, _ = await manager(store)
    assert second.signer.kid == first.signer.kid
    assert second.jwks() == first.jwks()


async def test_a_store_with_only_retiring_keys_gets_a_new_signer() -> None:
    store = MemoryKeyStore()
    first, _ = await manager(store)
    old = first.signer
    await store.save(StoredKey(old.kid, old.alg, old.to_stored().private_pem,
                               old.created_at, old.created_at + 10))
    second, _ = await manager(store)
    assert second.signer.kid != old.kid


async def test_reload_sees_another_replicas_rotation() -> None:
    store = MemoryKeyStore()
    one, _ = await manager(store)
    two, _ = await manager(store)
    rotated = await one.rotate()
    assert two.get(rotated.kid) is None
    await two.reload()
    assert two.signer.kid == rotated.kid


def test_a_manager_without_keys_has_no_signer() -> None:
    with pytest.raises(SecurityError, match=r"KeyManager\.open"):
        _ = KeyManager(MemoryKeyStore()).signer


@pytest.mark.parametrize("options", [{"alg": "HS256"}, {"max_token_ttl": 0},
                                     {"leeway": -1}])
def test_bad_manager_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(SecurityError):
        KeyManager(MemoryKeyStore(), **options)


def test_keys_are_the_types_their_algorithm_says() -> None:
    with pytest.raises(SecurityError, match="not a ES256 key"):
        SigningKey("k", "ES256", generate_private_key("EdDSA"), 0)
    from cryptography.hazmat.primitives.asymmetric import ec
    with pytest.raises(SecurityError, match="P-256"):
        SigningKey("k", "ES256", ec.generate_private_key(ec.SECP384R1()), 0)
    with pytest.raises(SecurityError, match="unsupported"):
        generate_private_key("HS256")


def test_a_stored_key_round_trips_and_a_bad_pem_is_refused() -> None:
    key = SigningKey.generate("ES256", now=5.0)
    again = SigningKey.from_stored(key.to_stored())
    assert (again.kid, again.alg, again.created_at, again.public_jwk) == (
        key.kid, key.alg, 5.0, key.public_jwk)
    with pytest.raises(SecurityError, match="unreadable PEM"):
        SigningKey.from_stored(StoredKey("k", "EdDSA", b"nope", 0))


def test_kids_say_what_and_when_and_are_unique() -> None:
    kid = new_kid("EdDSA", 1_800_000_000)
    assert kid.startswith("ed25519-20270115-")
    assert new_kid("ES256", 0).startswith("p256-19700101-")
    assert new_kid("RS256", 0).startswith("rsa-19700101-")
    assert len({new_kid("EdDSA", 0) for _ in range(100)}) == 100
    assert check_kid(kid) == kid


@pytest.mark.parametrize("kid", ["", "../x", "a/b", "x" * 65, "a.b"])
async def test_stores_refuse_kids_that_are_not_safe_names(kid: str, tmp_path: Path) -> None:
    stored = StoredKey(kid, "EdDSA", b"pem", 0)
    for store in (MemoryKeyStore(), FileKeyStore(tmp_path)):
        with pytest.raises(KeyStoreError):
            await store.save(stored)


# --- the file store ---------------------------------------------------------------------------


async def test_the_file_store_survives_a_restart_and_writes_0600(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    first, clock = await manager(FileKeyStore(directory), max_token_ttl=60)
    await first.rotate("ES256")
    restarted = await KeyManager.open(FileKeyStore(directory), clock=clock)
    assert restarted.jwks() == first.jwks()
    assert restarted.signer.kid == first.signer.kid
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    pems = sorted(directory.glob("*.pem"))
    assert len(pems) == 2
    for path in [*pems, *directory.glob("*.json")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert not list(directory.glob(".*.tmp"))
    issuer = TokenIssuer(restarted, "iss")
    token = issuer.issue("u", "aud", 30)
    assert jwt.get_unverified_header(token)["kid"] == first.signer.kid


async def test_the_file_store_deletes_and_tolerates_absent_keys(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path)
    assert await store.load() == []
    assert await FileKeyStore(tmp_path / "missing").load() == []
    key = SigningKey.generate("EdDSA", now=1.0).to_stored()
    await store.save(key)
    assert await store.load() == [key]
    await store.delete(key.kid)
    await store.delete(key.kid)
    assert await store.load() == []
    assert os.listdir(tmp_path) == []


async def test_the_file_store_replaces_a_key_in_place(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path)
    key = SigningKey.generate("EdDSA", now=1.0).to_stored()
    await store.save(key)
    retiring = StoredKey(key.kid, key.alg, key.private_pem, key.created_at, 99.5)
    await store.save(retiring)
    assert await store.load() == [retiring]


async def test_an_unreadable_file_store_says_which_key(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path)
    key = SigningKey.generate("EdDSA", now=1.0).to_stored()
    await store.save(key)
    (tmp_path / f"{key.kid}.pem").unlink()
    with pytest.raises(KeyStoreError, match=f"{key.kid}.json"):
        await store.load()
    (tmp_path / f"{key.kid}.json").write_text("{not json")
    with pytest.raises(KeyStoreError):
        await store.load()


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    from core.security import keystore

    target = tmp_path / "k.pem"
    with pytest.raises(TypeError):
        keystore._write_atomic(target, "not bytes")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


# --- the issuer -------------------------------------------------------------------------------


async def test_issued_tokens_carry_every_claim() -> None:
    keys, clock = await manager(max_token_ttl=900)
    issuer = TokenIssuer(keys, "https://auth", clock=clock)
    token = issuer.issue("svc-1", "platform", 300, roles=["b", "a", "a"],
                         permissions=["x:y"], kind="service", extra={"tenant": "t1"})
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "EdDSA", "kid": keys.signer.kid, "typ": "at+jwt"}
    payload = jwt.decode(token, options={"verify_signature": False})
    now = int(clock.now)
    assert payload == {
        "iss": "https://auth", "sub": "svc-1", "aud": "platform", "iat": now, "nbf": now,
        "exp": now + 300, "jti": payload["jti"], "kind": "service", "roles": ["a", "b"],
        "permissions": ["x:y"], "tenant": "t1"}
    assert len(payload["jti"]) == 32
    other = jwt.decode(issuer.issue("svc-1", ["a", "b"], 300),
                       options={"verify_signature": False})
    assert other["jti"] != payload["jti"]
    assert other["aud"] == ["a", "b"]
    assert (other["kind"], other["roles"], other["permissions"]) == ("user", [], [])


@pytest.mark.parametrize(("args", "options", "message"), [
    (("", "aud", 60), {}, "subject"),
    (("u", "aud", 0), {}, "ttl"),
    (("u", "aud", 0.5), {}, "ttl"),
    (("u", "aud", 901), {}, "ttl"),
    (("u", "aud", 60), {"kind": "robot"}, "kind"),
    (("u", "aud", 60), {"extra": {"sub": "admin", "exp": 1}}, r"\['exp', 'sub'\]"),
])
async def test_the_issuer_refuses_what_would_break_verification(
        args: tuple[Any, ...], options: dict[str, Any], message: str) -> None:
    keys, _ = await manager(max_token_ttl=900)
    with pytest.raises(SecurityError, match=message):
        TokenIssuer(keys, "iss").issue(*args, **options)


async def test_the_longest_ttl_is_allowed() -> None:
    keys, clock = await manager(max_token_ttl=900)
    token = TokenIssuer(keys, "iss", clock=clock).issue("u", "aud", 900)
    assert jwt.decode(token, options={"verify_signature": False})["exp"] == int(clock.now) + 900


def test_rsa_keys_are_2048_bits_with_the_usual_exponent() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = generate_private_key("RS256")
    assert isinstance(private, rsa.RSAPrivateKey)
    assert private.key_size == 2048
    assert private.public_key().public_numbers().e == 65537


def test_key_errors_say_what() -> None:
    with pytest.raises(SecurityError, match=r"^key k: not a ES256 key$"):
        SigningKey("k", "ES256", generate_private_key("EdDSA"), 0)
    with pytest.raises(SecurityError, match=r"^key k: not a HS256 key$"):
        SigningKey("k", "HS256", generate_private_key("EdDSA"), 0)
    with pytest.raises(SecurityError, match=r"^unsupported signing algorithm 'HS256'; one of "):
        generate_private_key("HS256")
    with pytest.raises(SecurityError, match=r"^unsupported signing algorithm 'HS256'$"):
        KeyManager(MemoryKeyStore(), alg="HS256")
    with pytest.raises(SecurityError, match=r"^max_token_ttl must be > 0 and leeway >= 0$"):
        KeyManager(MemoryKeyStore(), leeway=-0.1)
    with pytest.raises(KeyStoreError, match=r"^kid '\.\.' is not 1-64 characters"):
        check_kid("..")


def test_edge_options_are_accepted() -> None:
    manager = KeyManager(MemoryKeyStore(), max_token_ttl=0.5, leeway=0)
    assert (manager.max_token_ttl, manager.leeway) == (0.5, 0)
    assert check_kid("x" * 64) == "x" * 64


async def test_the_defaults_are_eddsa_an_hour_and_thirty_seconds() -> None:
    store = MemoryKeyStore()
    keys, clock = await manager(store)
    old = keys.signer.kid
    await keys.rotate()
    assert store.keys[old].retire_at == clock.now + 3600 + 30
    assert keys.signer.alg == "EdDSA"


async def test_two_signers_from_concurrent_rotations_resolve_to_the_newest() -> None:
    store = MemoryKeyStore()
    for created, kid in ((5.0, "b-old"), (9.0, "a-new"), (9.0, "0-tie")):
        pem = generate_private_key("EdDSA")
        stored = SigningKey(kid, "EdDSA", pem, created).to_stored()
        await store.save(stored)
    keys, _ = await manager(store)
    assert keys.signer.kid == "a-new"


async def test_a_key_retiring_now_is_gone() -> None:
    keys, clock = await manager(max_token_ttl=10, leeway=0)
    old = keys.signer.kid
    await keys.rotate()
    clock.now += 9.99
    assert keys.get(old) is not None
    clock.now += 0.01
    assert keys.get(old) is None
    assert old not in [k.kid for k in keys.keys()]


async def test_memory_store_deletes_absent_keys_quietly() -> None:
    store = MemoryKeyStore()
    await store.delete("nothing")
    assert await store.load() == []


async def test_the_metadata_file_holds_no_private_key(tmp_path: Path) -> None:
    import json

    store = FileKeyStore(tmp_path / "a" / "b")
    key = SigningKey.generate("EdDSA", now=1.0).to_stored()
    await store.save(key)
    meta = json.loads((tmp_path / "a" / "b" / f"{key.kid}.json").read_bytes())
    assert meta == {"kid": key.kid, "alg": "EdDSA", "created_at": 1.0, "retire_at": None}
    assert (tmp_path / "a" / "b" / f"{key.kid}.pem").read_bytes() == key.private_pem


async def test_a_temporary_file_left_by_a_crash_does_not_block_the_next_save(
        tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path)
    key = SigningKey.generate("EdDSA", now=1.0).to_stored()
    (tmp_path / f".{key.kid}.pem.tmp").write_bytes(b"half")
    await store.save(key)
    assert await store.load() == [key]
    assert sorted(os.listdir(tmp_path)) == sorted([f"{key.kid}.pem", f"{key.kid}.json"])


async def test_the_issuer_accepts_a_one_second_ttl_and_any_iterable_audience() -> None:
    keys, clock = await manager()
    issuer = TokenIssuer(keys, "iss", clock=clock)
    token = issuer.issue("u", iter(["a", "b"]), 1)
    payload = jwt.decode(token, options={"verify_signature": False})
    assert (payload["aud"], payload["exp"] - payload["iat"]) == (["a", "b"], 1)
    with pytest.raises(SecurityError, match=r"^a token needs a subject$"):
        issuer.issue("", "a", 1)
    with pytest.raises(SecurityError, match=r"^ttl must be in \[1, 3600.0\] s"):
        issuer.issue("u", "a", 0)
    with pytest.raises(SecurityError, match=r"^kind must be one of \['service', 'user'\]$"):
        issuer.issue("u", "a", 1, kind="x")  # type: ignore[arg-type]
    assert issuer.clock is clock and TokenIssuer(keys, "i").clock is time.time


def test_the_random_part_of_a_kid_is_16_hex_digits() -> None:
    suffix = new_kid("EdDSA", 0).rsplit("-", 1)[1]
    assert len(suffix) == 16 and int(suffix, 16) >= 0
