"""Bookkeeping of PBFT: vote books, rounds, prepared certificates and view-change digests.

Votes arrive over authenticated links (a PREPARE or COMMIT is only accepted from the connection of the
validator it names) and are counted once per voter per (view, kind): a second vote of one voter for
another block is an equivocation and is refused. Signatures are checked lazily, once per vote, when a
block's count reaches a quorum: a vote whose signature fails is dropped (as if never received) before
the quorum is taken, so a lock (``Prepared``) and a commit certificate hold only verified signatures.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping

from popbench import bls
from popbench.errors import ConsensusError, ProtocolError
from popbench.genesis import Genesis
from popbench.mempool import PoolItem
from popbench.model.block import AggregateCertificate, Block, vote_message
from popbench.model.hashing import sha256
from popbench.pop.state import State
from popbench.wire import ViewChange

VOTE_ENTRY = struct.Struct(">I64s")
NO_BLOCK = bytes(32)

Verify = Callable[[bytes, bytes, bytes], bool]
# (prepared_view, height, block_hash, prepared_votes) -> whether prepared_votes certify that lock
LockCheck = Callable[[int, int, bytes, bytes], bool]
LockCertificate = dict[int, bytes] | AggregateCertificate  # the votes of a lock, by vote path


class VoteBook:
    """Votes of one kind in one (view, height): block hash -> voter -> signature, one vote per voter.

    ``checked`` holds the voters whose signature has been verified (or who are this node), so each
    signature costs at most one verification however often the quorum is looked at.
    """

    __slots__ = ("by_hash", "checked", "choice")

    def __init__(self) -> None:
        self.by_hash: dict[bytes, dict[int, bytes]] = {}
        self.choice: dict[int, bytes] = {}  # voter -> the block hash it voted for in this view
        self.checked: set[int] = set()

    def add(self, block_hash: bytes, voter: int, signature: bytes, checked: bool = False) -> bool:
        """Record a vote; False when ``voter`` already voted for another block here (an equivocation)."""
        earlier = self.choice.get(voter)
        if earlier is not None:
            return earlier == block_hash  # a repeat changes nothing; a second block is refused
        self.choice[voter] = block_hash
        self.by_hash.setdefault(block_hash, {})[voter] = signature
        if checked:
            self.checked.add(voter)
        return True

    def count(self, block_hash: bytes) -> int:
        return len(self.by_hash.get(block_hash, ()))

    def votes(self, block_hash: bytes) -> dict[int, bytes]:
        return self.by_hash.get(block_hash, {})

    def verified(self, block_hash: bytes, message: bytes, keys: Mapping[int, bytes], verify: Verify) -> tuple[dict[int, bytes], int]:
        """The votes for ``block_hash`` whose signature on ``message`` holds, and how many were dropped.

        A dropped vote is forgotten, voter included: it is as if it never arrived.
        """
        votes = self.by_hash.get(block_hash, {})
        bad = [voter for voter, sig in votes.items() if voter not in self.checked and not _signed(voter, sig, message, keys, verify)]
        for voter in bad:
            del votes[voter]
            del self.choice[voter]
        self.checked.update(votes)
        return dict(votes), len(bad)

    def aggregated(self, block_hash: bytes, message: bytes, view: int, genesis: Genesis) -> tuple[AggregateCertificate | None, int]:
        """The collector path's quorum check: the shares for ``block_hash`` summed into one certificate,
        and how many shares were dropped.

        The sum of every share is verified once (one pairing however many signers); only when it fails
        is each unchecked share verified alone, the bad ones dropped (as if never received) and the rest
        summed again, which needs no further check: a sum of valid shares is valid for the sum of keys.
        """
        votes = self.by_hash.get(block_hash, {})
        index_of, table = genesis.index_of, genesis.bls_keys
        signers = sorted(voter for voter in votes if voter in index_of)
        total = bls.aggregate(votes[voter] for voter in signers)
        indices = [index_of[voter] for voter in signers]
        unchecked = [voter for voter in signers if voter not in self.checked]
        if total is not None and len(signers) == len(votes) and (not unchecked or table.verify_aggregate(indices, message, total)):
            self.checked.update(signers)
            return AggregateCertificate(view, bls.signers_bitmap(indices, genesis.n), total), 0
        bad = [voter for voter in votes if voter not in self.checked and not _share_holds(voter, votes[voter], message, genesis)]
        for voter in bad:
            del votes[voter]
            del self.choice[voter]
        self.checked.update(votes)
        if len(votes) < genesis.quorum:
            return None, len(bad)
        signers = sorted(votes)
        total = bls.aggregate(votes[voter] for voter in signers)
        if total is None:  # cannot happen: every share left verified alone
            return None, len(bad)
        return AggregateCertificate(view, bls.signers_bitmap([index_of[v] for v in signers], genesis.n), total), len(bad)


def _share_holds(voter: int, share: bytes, message: bytes, genesis: Genesis) -> bool:
    index = genesis.index_of.get(voter)
    return index is not None and genesis.bls_keys.verify_share(index, message, share)


def _signed(voter: int, signature: bytes, message: bytes, keys: Mapping[int, bytes], verify: Verify) -> bool:
    return voter in keys and verify(keys[voter], message, signature)


class Proposal:
    """A proposal this node accepted: the block, its exact bytes, its items, the state after it."""

    __slots__ = ("block", "items", "post", "raw")

    def __init__(self, block: Block, raw: bytes, items: list[PoolItem], post: State) -> None:
        self.block = block
        self.raw = raw
        self.items = items
        self.post = post


class Round:
    """What this node knows of one view at the current height."""

    __slots__ = ("bad_collectors", "certificates", "certificates_sent", "commits", "fallback", "own_votes", "pending",
                 "prepares", "proposal", "sent_commit", "sent_prepare", "view")  # fmt: skip

    def __init__(self, view: int) -> None:
        self.view = view
        self.proposal: Proposal | None = None
        self.pending: tuple[int, bytes] | None = None  # (leader, PRE-PREPARE block bytes) awaiting items
        self.prepares = VoteBook()
        self.commits = VoteBook()
        self.sent_prepare = False
        self.sent_commit = False
        # the collector path: verified certificates by (kind, block hash), the kinds this node (a
        # collector) has sent, collectors whose certificate failed, whether votes go to all in this view
        self.certificates: dict[tuple[str, bytes], AggregateCertificate] = {}
        self.certificates_sent: set[str] = set()
        self.bad_collectors: set[int] = set()
        self.fallback = False
        self.own_votes: list[object] = []  # the votes this node sent in this view, resent to all on fallback


class Prepared:
    """This node's lock: the highest-view block it saw a quorum of PREPAREs for at the current height.

    ``votes`` are exactly the PREPAREs whose signatures this node verified when it locked (a quorum or
    more), or on the collector path the verified PREPARE aggregate certificate, so the certificate its
    VIEW-CHANGE carries is valid for every receiver.
    """

    __slots__ = ("proposal", "view", "votes")

    def __init__(self, view: int, proposal: Proposal, votes: LockCertificate) -> None:
        self.view = view
        self.proposal = proposal
        self.votes = votes

    def encoded_votes(self) -> bytes:
        if isinstance(self.votes, AggregateCertificate):
            return self.votes.encode()
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
    """A VIEW-CHANGE's list of (voter, signature) PREPAREs; ProtocolError if it is not whole entries."""
    if len(raw) % VOTE_ENTRY.size:
        raise ProtocolError("prepared_votes is not a whole number of votes")
    return dict(VOTE_ENTRY.iter_unpack(raw))


def list_lock_check(chain_id: bytes, keys: Mapping[int, bytes], quorum: int, verify: Verify) -> LockCheck:
    """The all-to-all path's lock: at least a quorum of valid PREPARE signatures of distinct validators."""

    def check(prepared_view: int, height: int, block_hash: bytes, prepared_votes: bytes) -> bool:
        if len(prepared_votes) % VOTE_ENTRY.size:
            return False
        votes = valid_votes("prepare", chain_id, prepared_view, height, block_hash, decode_votes(prepared_votes), keys, verify)
        return len(votes) >= quorum

    return check


def aggregate_lock_check(genesis: Genesis) -> LockCheck:
    """The collector path's lock: one PREPARE aggregate certificate of the lock's view (one pairing)."""

    def check(prepared_view: int, height: int, block_hash: bytes, prepared_votes: bytes) -> bool:
        try:
            certificate = AggregateCertificate.decode(prepared_votes)
        except ProtocolError:
            return False
        return certificate.view == prepared_view and certificate.valid(genesis, height, block_hash, "prepare")

    return check


def lock_voters(vc: ViewChange, genesis: Genesis) -> list[int]:
    """The validators whose PREPAREs certify ``vc``'s (already checked) lock: they hold its items."""
    if genesis.params.votes == 0:
        return sorted(decode_votes(vc.prepared_votes))
    return AggregateCertificate.decode(vc.prepared_votes).signer_ids(genesis)


def prepared_block_of(vc: ViewChange, check: LockCheck) -> Block | None:
    """The block ``vc`` claims prepared, if its certificate holds a quorum of valid PREPAREs; else None.

    A certificate counts only for a view below the one the VIEW-CHANGE asks for (an honest lock always
    is): the obligation of NEW-VIEW(v) then comes from views below v, which the safety argument needs.
    """
    if not vc.prepared_block or vc.prepared_view >= vc.new_view:
        return None
    try:
        block = Block.decode(vc.prepared_block)
    except ProtocolError:
        return None
    if block.height != vc.height:
        return None
    return block if check(vc.prepared_view, vc.height, block.hash, vc.prepared_votes) else None


def highest_certificate(view_changes: list[ViewChange], check: LockCheck) -> ViewChange | None:
    """The view change carrying the highest-view valid prepared certificate, if any carries one.

    Two valid certificates of one view name the same block (their quorums share an honest voter, who
    prepares once per view), so which of them is returned does not matter.
    """
    best: ViewChange | None = None
    for vc in view_changes:
        if best is not None and vc.prepared_view <= best.prepared_view:
            continue
        if prepared_block_of(vc, check) is not None:
            best = vc
    return best


def highest_prepared(view_changes: list[ViewChange], check: LockCheck) -> tuple[int, bytes] | None:
    """(view, block bytes) of the highest-view valid prepared certificate among ``view_changes``."""
    best = highest_certificate(view_changes, check)
    return (best.prepared_view, best.prepared_block) if best is not None else None


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
