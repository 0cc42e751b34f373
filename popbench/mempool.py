"""The bounded mempool: verified proofs and transfers waiting for a block, in arrival order.

When full it refuses new items (the node answers SUBMIT with BUSY) instead of growing without limit.
Items a pending proposal names are the exception: a replica must hold them to prepare the block, so
they may go beyond the bound (by at most one block's worth per proposal; see Admission.expect).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from popbench.wire import ItemKind


class PoolItem:
    """One admitted item: its kind, decoded object and the exact bytes it arrived as."""

    __slots__ = ("item_id", "kind", "obj", "raw")

    def __init__(self, item_id: bytes, kind: ItemKind, obj: Any, raw: bytes) -> None:
        self.item_id = item_id
        self.kind = kind
        self.obj = obj
        self.raw = raw


class Mempool:
    """Insertion-ordered and bounded; a proposal takes the oldest items first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: dict[bytes, PoolItem] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    def __iter__(self) -> Iterator[PoolItem]:
        return iter(self._items.values())

    @property
    def full(self) -> bool:
        return len(self._items) >= self.limit

    def get(self, item_id: bytes) -> PoolItem | None:
        return self._items.get(item_id)

    def add(self, item: PoolItem, beyond_limit: bool = False) -> bool:
        """Admit ``item``; False when the pool is full, unless ``beyond_limit`` (a proposal needs it)."""
        if len(self._items) >= self.limit and not beyond_limit:
            return False
        self._items[item.item_id] = item
        return True

    def oldest(self, max_items: int) -> list[PoolItem]:
        batch: list[PoolItem] = []
        for item in self._items.values():
            if len(batch) >= max_items:
                break
            batch.append(item)
        return batch

    def remove(self, item_ids: Iterable[bytes]) -> None:
        pop = self._items.pop
        for item_id in item_ids:
            pop(item_id, None)

    def readd(self, items: Iterable[PoolItem]) -> None:
        """Return items of an abandoned block (ignores the limit: they were admitted once already)."""
        for item in items:
            self._items.setdefault(item.item_id, item)
