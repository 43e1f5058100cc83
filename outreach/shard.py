"""Planning shards: which customers one planning process owns when several share a run.

A shard is ``(index, count)``: it owns the customers whose id hashes to ``index`` modulo
``count``. The hash is CRC-32 of the id's UTF-8 bytes, the same on every host and every Python
(the built-in ``hash`` of a string changes from process to process). Frequency caps and the
consent re-check are per customer, so a shard owns its customers' caps and waiting messages
whole: shards never decide about the same customer, and together they decide about everyone.

The planner takes a shard and filters what it streams (customers, their events, the waiting
messages it re-checks) through :meth:`Shard.owns`; nothing else about planning changes.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (``0 <= index < count``)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index} of {self.count}: expected 0 <= index < count")

    def owns(self, customer_id: str) -> bool:
        """Whether this shard plans for the customer with this id."""
        return self.count == 1 or zlib.crc32(customer_id.encode()) % self.count == self.index

    def only(self, items: Iterable[T], customer_id: Callable[[T], str]) -> Iterator[T]:
        """The items of ``items`` whose customer (``customer_id(item)``) this shard owns."""
        if self.count == 1:
            yield from items
            return
        crc32, count, index = zlib.crc32, self.count, self.index
        for item in items:
            if crc32(customer_id(item).encode()) % count == index:
                yield item

    def __str__(self) -> str:
        return f"shard {self.index + 1} of {self.count}"

