"""PoP blocks, the votes on them and commit certificates (layouts: docs/design.md and docs/protocol.md).

Header: ``height u64 | view u64 | prev_hash (32) | proposer u32 | timestamp_ns u64 | items_root (32) |
state_root (32)``; the block hash is the sha256 of the header. The body lists the proof ids, then the
transfer ids; ``items_root`` is their Merkle root, so the header commits to the body.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

from popbench import crypto
from popbench.errors import ConsensusError, ProtocolError
from popbench.merkle import merkle_root
from popbench.model.hashing import sha256
from popbench.wire.codec import Reader, Writer

HEADER = struct.Struct(">QQ32sIQ32s32s")
VOTE_DOMAIN = b"popbench/vote/v1/"
VOTE_KINDS = ("prepare", "commit", "view-change")
VOTE = struct.Struct(">I64s")


class Block:
    __slots__ = ("height", "view", "prev_hash", "proposer", "timestamp_ns", "items_root", "state_root",
                 "proof_ids", "transfer_ids", "_hash")  # fmt: skip

    def __init__(self, height: int, view: int, prev_hash: bytes, proposer: int, timestamp_ns: int, items_root: bytes,
                 state_root: bytes, proof_ids: list[bytes], transfer_ids: list[bytes]) -> None:  # fmt: skip
        self.height = height
        self.view = view
        self.prev_hash = prev_hash
        self.proposer = proposer
        self.timestamp_ns = timestamp_ns
        self.items_root = items_root
        self.state_root = state_root
        self.proof_ids = proof_ids
        self.transfer_ids = transfer_ids
        self._hash: bytes | None = None

    @staticmethod
    def items_root_of(proof_ids: Sequence[bytes], transfer_ids: Sequence[bytes]) -> bytes:
        return merkle_root([*proof_ids, *transfer_ids])

    def header_bytes(self) -> bytes:
        return HEADER.pack(self.height, self.view, self.prev_hash, self.proposer, self.timestamp_ns,
                           self.items_root, self.state_root)  # fmt: skip

    @property
    def hash(self) -> bytes:
        if self._hash is None:
            self._hash = sha256(self.header_bytes())
        return self._hash

    def encode(self) -> bytes:
        return Writer().raw(self.header_bytes()).hashes(self.proof_ids).hashes(self.transfer_ids).getvalue()

    @classmethod
    def decode(cls, data: bytes) -> Block:
        reader = Reader(data)
        height, view, prev_hash, proposer, timestamp_ns, items_root, state_root = reader.unpack(HEADER)
        proof_ids, transfer_ids = reader.hashes(), reader.hashes()
        reader.finish()
        return cls(height, view, prev_hash, proposer, timestamp_ns, items_root, state_root, proof_ids, transfer_ids)


def vote_message(kind: str, chain_id: bytes, view: int, height: int, block_hash: bytes) -> bytes:
    """The bytes a validator signs for a vote of ``kind``; domain-separated by kind and chain."""
    if kind not in VOTE_KINDS:
        raise ValueError(f"unknown vote kind {kind!r}")
    return VOTE_DOMAIN + kind.encode() + b"/" + chain_id + struct.pack(">QQ", view, height) + block_hash


class CommitCertificate:
    """2f+1 COMMIT signatures of distinct validators on one block in one view."""

    __slots__ = ("view", "votes")

    def __init__(self, view: int, votes: list[tuple[int, bytes]]) -> None:
        self.view = view
        self.votes = votes

    def encode(self) -> bytes:
        writer = Writer().u64(self.view).u32(len(self.votes))
        for voter, signature in self.votes:
            writer.pack(VOTE, voter, signature)
        return writer.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> CommitCertificate:
        reader = Reader(data)
        view, count = reader.u64(), reader.u32()
        if count * VOTE.size != len(data) - 12:
            raise ProtocolError(f"certificate of {count} votes does not match its length")
        votes = [reader.unpack(VOTE) for _ in range(count)]
        return cls(view, [(voter, signature) for voter, signature in votes])

    def verify(self, chain_id: bytes, height: int, block_hash: bytes, validators: Mapping[int, bytes], quorum: int) -> None:
        """Raise ConsensusError unless ``quorum`` distinct known validators signed COMMIT for the block."""
        message = vote_message("commit", chain_id, self.view, height, block_hash)
        signers = set()
        for voter, signature in self.votes:
            key = validators.get(voter)
            if key is None or voter in signers:
                raise ConsensusError(f"certificate vote of unknown or repeated validator {voter}")
            if not crypto.verify(key, message, signature):
                raise ConsensusError(f"certificate signature of validator {voter} does not verify")
            signers.add(voter)
        if len(signers) < quorum:
            raise ConsensusError(f"certificate has {len(signers)} signatures, quorum is {quorum}")
