"""`RuntimeKey` and `Runtime`: a part is found by its key object, holds the key's type, and
is set once; a missing one is a clear error, never None."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from core.runtime import MissingPartError, Runtime, RuntimeKey

CACHE = RuntimeKey("cache", dict)
WAKE = RuntimeKey[Callable[[], None]]("wake")


def test_a_part_is_found_by_its_key_object_not_by_its_name() -> None:
    runtime = Runtime()
    runtime.add(CACHE, {"a": 1})
    assert runtime[CACHE] == {"a": 1} and CACHE in runtime
    namesake = RuntimeKey("cache", dict)
    assert namesake not in runtime and runtime.get(namesake) is None
    with pytest.raises(MissingPartError, match="no <RuntimeKey 'cache': dict> in this runtime"):
        runtime[namesake]


def test_a_part_of_another_type_or_set_twice_is_refused() -> None:
    runtime = Runtime()
    with pytest.raises(TypeError, match="cannot hold list"):
        runtime.add(CACHE, [])  # type: ignore[arg-type]
    assert CACHE not in runtime
    runtime.add(CACHE, {})
    with pytest.raises(ValueError, match="already set"):
        runtime.add(CACHE, {})


def test_a_key_without_a_class_holds_what_its_type_parameter_says_unchecked() -> None:
    runtime = Runtime()
    calls: list[int] = []
    runtime.add(WAKE, lambda: calls.append(1))
    runtime[WAKE]()
    assert calls == [1] and repr(WAKE) == "<RuntimeKey 'wake': ?>"
