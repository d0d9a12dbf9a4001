"""Which offsets are safe to commit when records finish out of order.

Records of one partition run concurrently (different keys), so record 7 may finish before
record 5. The committable position of a partition is the lowest offset still in flight
(or one past the last seen), never beyond an unfinished record: at-least-once holds.
"""

from __future__ import annotations

from collections import deque

TopicPartitionKey = tuple[str, int]


class PartitionProgress:
    """Offsets of one partition, in the order they were received (ascending)."""

    __slots__ = ("_done", "_in_flight", "committable", "moved")

    def __init__(self) -> None:
        self._in_flight: deque[int] = deque()
        self._done: set[int] = set()
        self.committable: int | None = None
        self.moved = False
        """Whether `committable` moved since the tracker last took it."""

    def received(self, offset: int) -> None:
        self._in_flight.append(offset)

    def received_many(self, offsets: list[int]) -> None:
        """A poll batch's offsets of this partition, ascending."""
        self._in_flight.extend(offsets)

    def finished(self, offset: int) -> bool:
        """Mark `offset` done; True if the committable position moved."""
        in_flight, done = self._in_flight, self._done
        if not in_flight or in_flight[0] != offset:
            done.add(offset)  # finished ahead of an older one: wait for it
            return False
        # The oldest one finished (the common case, in order): no trip through `_done`.
        first = in_flight.popleft()
        while in_flight and in_flight[0] in done:
            first = in_flight.popleft()
            done.discard(first)
        self.committable = first + 1
        self.moved = True
        return True

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)


class OffsetTracker:
    """Progress of every owned partition, and which ones moved since the last `take()`.

    The consumer's hot path holds a partition's `PartitionProgress` (`partition(tp)`) and
    calls it directly, once per batch on receipt and once per record when it finishes; a
    forgotten partition's progress is detached, so a late `finished` on it changes nothing."""

    def __init__(self) -> None:
        self._partitions: dict[TopicPartitionKey, PartitionProgress] = {}

    def partition(self, tp: TopicPartitionKey) -> PartitionProgress:
        progress = self._partitions.get(tp)
        if progress is None:
            progress = self._partitions[tp] = PartitionProgress()
        return progress

    def received(self, tp: TopicPartitionKey, offset: int) -> None:
        self.partition(tp).received(offset)

    def finished(self, tp: TopicPartitionKey, offset: int) -> None:
        progress = self._partitions.get(tp)
        if progress is not None:
            progress.finished(offset)

    def take(self) -> dict[TopicPartitionKey, int]:
        """Committable positions that moved since the last call."""
        result = {}
        for tp, progress in self._partitions.items():
            if progress.moved:
                progress.moved = False
                if progress.committable is not None:
                    result[tp] = progress.committable
        return result

    def forget(self, tps: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        """Drop partitions (revoked); returns their last committable positions."""
        result = {}
        for tp in tps:
            progress = self._partitions.pop(tp, None)
            if progress is not None and progress.committable is not None:
                result[tp] = progress.committable
        return result

    def in_flight(self, tp: TopicPartitionKey) -> int:
        progress = self._partitions.get(tp)
        return progress.in_flight if progress else 0
