"""Merkle roots and inclusion proofs over sha256, domain-separated.

Leaves hash as ``sha256(0x00 || leaf)`` and inner nodes as ``sha256(0x01 || left || right)``, so a leaf can
never pass for an inner node. An odd node at the end of a level is promoted unchanged to the next level
(never duplicated, which would let two different lists share a root). The root of no leaves is
``sha256(b"")``. :class:`MerkleTree` keeps the same tree level by level, so that the state root
(popbench/pop/state.py) rehashes only what a block changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


def _leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _node_of_pair(pair: bytes | bytearray) -> bytes:
    return hashlib.sha256(b"\x01" + pair).digest()


def _next_level(level: list[bytes]) -> list[bytes]:
    paired = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        paired.append(level[-1])
    return paired


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    if not leaves:
        return EMPTY_ROOT
    level = [_leaf(leaf) for leaf in leaves]
    while len(level) > 1:
        level = _next_level(level)
    return level[0]


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Sibling hashes from the leaf up; levels where the node was promoted contribute nothing."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} of {len(leaves)}")
    level = [_leaf(leaf) for leaf in leaves]
    proof: list[bytes] = []
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        level = _next_level(level)
        index //= 2
    return proof


def verify_inclusion(leaf: bytes, index: int, count: int, proof: Sequence[bytes], root: bytes) -> bool:
    if not 0 <= index < count:
        return False
    node = _leaf(leaf)
    remaining = list(proof)
    width = count
    while width > 1:
        sibling = index ^ 1
        if sibling < width:
            if not remaining:
                return False
            other = remaining.pop(0)
            node = _node(other, node) if index % 2 else _node(node, other)
        index //= 2
        width = (width + 1) // 2
    return not remaining and node == root


_HASH = 32
_sha256 = hashlib.sha256


class MerkleTree:
    """The tree of :func:`merkle_root`, kept level by level so changing leaves rehashes only their paths.

    Each level is one bytearray of 32-byte hashes, leaf hashes first, the root last: 64 bytes per leaf
    in all, whatever the count. Replacing k leaves rehashes k paths (about k log2 n inner nodes);
    inserting leaves rehashes every inner node from the first insertion to the end, since every later
    leaf moves one place and pairs with a new neighbour (that is the tree's definition, not a shortcut
    missed). The root equals ``merkle_root`` of the same leaves (tests/test_merkle_state.py checks it).
    """

    __slots__ = ("_levels",)

    def __init__(self, leaves: Sequence[bytes] = ()) -> None:
        self._levels: list[bytearray] = []
        if leaves:
            self._levels.append(bytearray(b"".join([_leaf(leaf) for leaf in leaves])))
            self._rehash(set(), 0)

    def __len__(self) -> int:
        return len(self._levels[0]) // _HASH if self._levels else 0

    def root(self) -> bytes:
        return bytes(self._levels[-1]) if len(self) else EMPTY_ROOT

    def copy(self) -> MerkleTree:
        copied = MerkleTree()
        copied._levels = [bytearray(level) for level in self._levels]
        return copied

    def apply(self, replaced: Mapping[int, bytes], inserted: Sequence[tuple[int, bytes]] = ()) -> None:
        """Replace and insert leaves, then rehash what changed.

        Every index is a position in the leaf list as it is before the call: ``replaced`` maps an
        existing leaf's position to its new data; ``inserted`` holds (position, data) in ascending
        position, each new leaf going before the leaf now at that position (at the end for len(self));
        leaves given the same position keep their order.
        """
        count = len(self)
        if any(not 0 <= index < count for index in replaced):
            raise IndexError(f"a replaced leaf is outside 0..{count - 1}")
        if inserted and (inserted[0][0] < 0 or inserted[-1][0] > count):
            raise IndexError(f"an inserted leaf is outside 0..{count}")
        if not self._levels:
            self._levels.append(bytearray())
        leaves = self._levels[0]
        for index, data in replaced.items():
            leaves[index * _HASH : (index + 1) * _HASH] = _leaf(data)
        tail = count
        if inserted:
            tail = inserted[0][0]
            self._levels[0] = _merge(leaves, [(index * _HASH, _leaf(data)) for index, data in inserted])
        if len(self):
            self._rehash({index for index in replaced if index < tail}, tail)

    def _rehash(self, dirty: set[int], tail: int) -> None:
        """Recompute the parents of ``dirty`` nodes and of every node from ``tail`` on, level by level."""
        depth = 0
        while len(self._levels[depth]) > _HASH:
            level = self._levels[depth]
            count = len(level) // _HASH
            if depth + 1 == len(self._levels):
                self._levels.append(bytearray())
            parent = self._levels[depth + 1]
            tail //= 2
            dirty = {index // 2 for index in dirty if index // 2 < tail}
            for index in dirty:  # below the tail, so never the odd last node
                start = 2 * index * _HASH
                parent[index * _HASH : (index + 1) * _HASH] = _node_of_pair(level[start : start + 2 * _HASH])
            rest = bytes(level[2 * tail * _HASH :])  # one copy to slice the pairs from, faster than the bytearray
            prefix = b"\x01"
            pairs = [_sha256(prefix + rest[i : i + 2 * _HASH]).digest() for i in range(0, len(rest) - _HASH, 2 * _HASH)]
            if (count - 2 * tail) % 2:
                pairs.append(rest[-_HASH:])  # the odd last node, promoted unchanged
            parent[tail * _HASH :] = b"".join(pairs)
            depth += 1
        del self._levels[depth + 1 :]


def _merge(old: bytearray, inserted: Sequence[tuple[int, bytes]]) -> bytearray:
    """``old`` with each (offset, data) of ``inserted`` (ascending offsets into ``old``) put in at its offset."""
    pieces: list[bytes | bytearray | memoryview] = []
    view = memoryview(old)
    previous = 0
    for offset, data in inserted:
        pieces.append(view[previous:offset])
        pieces.append(data)
        previous = offset
    pieces.append(view[previous:])
    merged = bytearray(b"".join(pieces))
    view.release()
    return merged
