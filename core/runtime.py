"""Typed keys for a running service's parts, and the container that holds them.

aiohttp's `AppKey[T]` is the model: a key carries its value's type, so `runtime[CACHE]`
is a `ProfileCache` to the type checker, with no string name and no cast::

    CACHE = RuntimeKey("profile_cache", ProfileCache)

    create_service(..., hooks={CACHE: profiles})    # what the hook yields is runtime[CACHE]

    @handlers.handles(ProfileUpdated)
    async def invalidate(event: ProfileUpdated, ctx: MessageContext) -> None:
        await ctx.runtime[CACHE].invalidate(event.data.user_id)

Neutral on purpose (it imports nothing of `core`): `core.messaging` hands the container to
handlers (`MessageContext.runtime`) and `core.app` fills it, and the imports between those
two flow one way only (core.app -> core.messaging).
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")


class MissingPartError(LookupError):
    """The running service has no part under this key (no hook, or not started yet)."""


class RuntimeKey(Generic[T]):
    """The name and type of one part. Keys compare by identity: two keys with one name are
    two parts. `type` is checked when a value is added, when it is a class (a key for a
    callable, say, is made as `RuntimeKey[Callable[[], None]]("wake")` and not checked)."""

    __slots__ = ("name", "type")

    def __init__(self, name: str, t: type[T] | None = None) -> None:
        self.name = name
        self.type = t

    def __repr__(self) -> str:
        kind = self.type.__qualname__ if self.type is not None else "?"
        return f"<RuntimeKey {self.name!r}: {kind}>"


class Runtime:
    """A running service's parts by typed key. Filled at start-up before anything reads it
    (the consumers start after the last part is added), then only read: one event loop, no
    lock."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: dict[RuntimeKey[Any], object] = {}

    def add(self, key: RuntimeKey[T], value: T) -> None:
        """Put `value` under `key`; a key holds one value for the runtime's life."""
        if key in self._parts:
            raise ValueError(f"{key} is already set in this runtime")
        if key.type is not None and not isinstance(value, key.type):
            raise TypeError(f"{key} cannot hold {type(value).__qualname__}")
        self._parts[key] = value

    def __getitem__(self, key: RuntimeKey[T]) -> T:
        try:
            return cast(T, self._parts[key])
        except KeyError:
            raise MissingPartError(
                f"no {key} in this runtime: declare its hook in create_service(hooks=...)"
            ) from None

    def get(self, key: RuntimeKey[T]) -> T | None:
        return cast("T | None", self._parts.get(key))

    def __contains__(self, key: object) -> bool:
        return key in self._parts
