"""Bookkeeping of PBFT: vote books, rounds, prepared certificates and view-change digests.

Votes are counted on arrival over authenticated links (a PREPARE or COMMIT is only accepted from the
connection of the validator it names). Signatures are checked where they become evidence: the 2f+1
COMMIT signatures of a certificate, and the PREPARE signatures carried into a view change.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping

from popbench.errors import ConsensusError, ProtocolError
from popbench.mempool import PoolItem
from popbench.model.block import Block, vote_message
from popbench.model.hashing import sha256
from popbench.pop.state import State
from popbench.wire import ViewChange

VOTE_ENTRY = struct.Struct(">I64s")
NO_BLOCK = bytes(32)

Verify = Callable[[bytes, bytes, bytes], bool]


class VoteBook:
    """Votes of one kind in one (view, height): block hash -> voter -> signature."""

    __slots__ = ("by_hash",)

    def __init__(self) -> None:
        self.by_hash: dict[bytes, dict[int, bytes]] = {}

    def add(self, block_hash: bytes, voter: int, signature: bytes) -> int:
        votes = self.by_hash.setdefault(block_hash, {})
        votes.setdefault(voter, signature)
        return len(votes)

    def count(self, block_hash: bytes) -> int:
        return len(self.by_hash.get(block_hash, ()))

    def votes(self, block_hash: bytes) -> dict[int, bytes]:
        return self.by_hash.get(block_hash, {})


class Proposal:
    """A proposal this node accepted: the block, its exact bytes, its items, the state after it."""

    __slots__ = ("block", "raw", "items", "post")

    def __init__(self, block: Block, raw: bytes, items: list[PoolItem], post: State) -> None:
        self.block = block
        self.raw = raw
        self.items = items
        self.post = post


class Round:
    """What this node knows of one view at the current height."""

    __slots__ = ("view", "proposal", "pending", "prepares", "commits", "sent_prepare", "sent_commit")

    def __init__(self, view: int) -> None:
        self.view = view
        self.proposal: Proposal | None = None
        self.pending: tuple[int, bytes] | None = None  # (leader, PRE-PREPARE block bytes) awaiting items
        self.prepares = VoteBook()
        self.commits = VoteBook()
        self.sent_prepare = False
        self.sent_commit = False


class Prepared:
    """This node's lock: the highest-view block it saw 2f+1 PREPAREs for at the current height."""

    __slots__ = ("view", "proposal", "votes")

    def __init__(self, view: int, proposal: Proposal, votes: dict[int, bytes]) -> None:
        self.view = view
        self.proposal = proposal
        self.votes = votes

    def encoded_votes(self) -> bytes:
        return b"".join(VOTE_ENTRY.pack(voter, sig) for voter, sig in sorted(self.votes.items()))


def view_change_digest(prepared_view: int, prepared_block: bytes, prepared_votes: bytes) -> bytes:
    block_hash = Block.decode(prepared_block).hash if prepared_block else NO_BLOCK
    return sha256(prepared_view.to_bytes(8, "big") + block_hash + prepared_votes)


def view_change_message(chain_id: bytes, vc: ViewChange) -> bytes:
    digest = view_change_digest(vc.prepared_view, vc.prepared_block, vc.prepared_votes)
    return vote_message("view-change", chain_id, vc.new_view, vc.height, digest)


def valid_votes(
    kind: str, chain_id: bytes, view: int, height: int, block_hash: bytes,
    votes: Mapping[int, bytes], keys: Mapping[int, bytes], verify: Verify,
) -> dict[int, bytes]:  # fmt: skip
    """The subset of ``votes`` from known validators whose signatures verify."""
    message = vote_message(kind, chain_id, view, height, block_hash)
    return {
        voter: sig for voter, sig in votes.items()
        if voter in keys and verify(keys[voter], message, sig)
    }  # fmt: skip


def decode_votes(raw: bytes) -> dict[int, bytes]:
    return {voter: sig for voter, sig in VOTE_ENTRY.iter_unpack(raw)}


def prepared_block_of(vc: ViewChange, chain_id: bytes, keys: Mapping[int, bytes], quorum: int, verify: Verify) -> Block | None:
    """The block ``vc`` claims prepared, if its certificate holds 2f+1 valid PREPAREs; else None."""
    if not vc.prepared_block:
        return None
    try:
        block = Block.decode(vc.prepared_block)
    except ProtocolError:
        return None
    votes = valid_votes("prepare", chain_id, vc.prepared_view, vc.height, block.hash, decode_votes(vc.prepared_votes), keys, verify)
    return block if len(votes) >= quorum else None


def highest_prepared(view_changes: list[ViewChange], chain_id: bytes, keys: Mapping[int, bytes], quorum: int, verify: Verify) -> tuple[int, bytes] | None:
    """(view, block bytes) of the highest-view valid prepared certificate among ``view_changes``."""
    best: tuple[int, bytes] | None = None
    for vc in view_changes:
        if best is not None and vc.prepared_view <= best[0]:
            continue
        if prepared_block_of(vc, chain_id, keys, quorum, verify) is not None:
            best = (vc.prepared_view, vc.prepared_block)
    return best


def check_new_view_quorum(
    bodies: list[bytes], new_view: int, height: int, chain_id: bytes,
    keys: Mapping[int, bytes], quorum: int, verify: Verify,
) -> list[ViewChange]:  # fmt: skip
    """Decode and check the VIEW_CHANGEs of a NEW_VIEW: 2f+1 distinct validators, all for this view."""
    seen: dict[int, ViewChange] = {}
    for body in bodies:
        vc = ViewChange.decode_body(body)
        if vc.new_view != new_view or vc.height != height or vc.voter not in keys:
            raise ConsensusError(f"NEW_VIEW carries a view change for view {vc.new_view} height {vc.height}")
        if not verify(keys[vc.voter], view_change_message(chain_id, vc), vc.signature):
            raise ConsensusError(f"NEW_VIEW carries a bad view-change signature of validator {vc.voter}")
        seen[vc.voter] = vc
    if len(seen) < quorum:
        raise ConsensusError(f"NEW_VIEW has {len(seen)} view changes, quorum is {quorum}")
    return list(seen.values())
