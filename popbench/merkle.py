"""Merkle roots and inclusion proofs over sha256, domain-separated.

Leaves hash as ``sha256(0x00 || leaf)`` and inner nodes as ``sha256(0x01 || left || right)``, so a leaf can
never pass for an inner node. An odd node at the end of a level is promoted unchanged to the next level
(never duplicated, which would let two different lists share a root). The root of no leaves is
``sha256(b"")``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


def _leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


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
