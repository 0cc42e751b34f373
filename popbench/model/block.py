"""PoP blocks, the votes on them and commit certificates (layouts: docs/design.md and docs/protocol.md).

Header: ``height u64 | view u64 | prev_hash (32) | proposer u32 | timestamp_ns u64 | items_root (32) |
state_root (32)``; the block hash is the sha256 of the header. The body lists the proof ids, then the
transfer ids; ``items_root`` is their Merkle root, so the header commits to the body.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from popbench import bls, crypto
from popbench.errors import ConsensusError, ProtocolError
from popbench.merkle import merkle_root
from popbench.model.hashing import sha256
from popbench.wire.codec import Reader, Writer

if TYPE_CHECKING:
    from popbench.genesis import Genesis

HEADER = struct.Struct(">QQ32sIQ32s32s")
VOTE_DOMAIN = b"popbench/vote/v1/"
VOTE_KINDS = ("prepare", "commit", "view-change")
VOTE = struct.Struct(">I64s")
GoodVote = tuple[bytes, int, bytes]  # (signed message, voter, signature) of a vote that verified
AGGREGATE_MARKER = 0xFFFF_FFFF  # where a list certificate has its vote count: no count of 64-byte votes fits a frame


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

    def check(self, genesis: Genesis, height: int, block_hash: bytes, known_good: set[GoodVote] | None = None) -> None:
        """Raise ConsensusError unless this certifies ``block_hash`` at ``height`` on ``genesis``'s chain."""
        if genesis.params.votes != 0:
            raise ConsensusError("a chain on the collector vote path certifies with aggregate signatures")
        self.verify(genesis.chain_id, height, block_hash, genesis.public_keys, genesis.quorum, known_good)

    def verify(self, chain_id: bytes, height: int, block_hash: bytes, validators: Mapping[int, bytes], quorum: int,
               known_good: set[GoodVote] | None = None) -> None:  # fmt: skip
        """Raise ConsensusError unless ``quorum`` distinct known validators signed COMMIT for the block.
        ``known_good`` (a verifier reading many certificates): votes already verified are not verified
        again, and the ones verified here are added."""
        message = vote_message("commit", chain_id, self.view, height, block_hash)
        signers = set()
        for voter, signature in self.votes:
            key = validators.get(voter)
            if key is None or voter in signers:
                raise ConsensusError(f"certificate vote of unknown or repeated validator {voter}")
            if known_good is None or (message, voter, signature) not in known_good:
                if not crypto.verify(key, message, signature):
                    raise ConsensusError(f"certificate signature of validator {voter} does not verify")
                if known_good is not None:
                    known_good.add((message, voter, signature))
            signers.add(voter)
        if len(signers) < quorum:
            raise ConsensusError(f"certificate has {len(signers)} signatures, quorum is {quorum}")


class AggregateCertificate:
    """n - f BLS shares of one vote kind on one block in one view, summed: the signer bitmap (genesis
    order, popbench/bls.py) and the 96-byte aggregate signature. A PREPARE one is a lock's certificate
    (VIEW-CHANGE carries it); a COMMIT one is a block's commit certificate on the collector vote path.

    Encoding: ``view u64 | 0xFFFFFFFF u32 | signers blob | aggregate (96)``; the marker sits where a list
    certificate has its count, so one decoder (``decode_certificate``) reads both kinds of record.
    """

    __slots__ = ("aggregate", "signers", "view")

    def __init__(self, view: int, signers: bytes, aggregate: bytes) -> None:
        self.view = view
        self.signers = signers
        self.aggregate = aggregate

    def encode(self) -> bytes:
        return Writer().u64(self.view).u32(AGGREGATE_MARKER).blob(self.signers).fixed(self.aggregate, bls.SIGNATURE_BYTES).getvalue()

    @classmethod
    def decode(cls, data: bytes) -> AggregateCertificate:
        reader = Reader(data)
        view, marker = reader.u64(), reader.u32()
        if marker != AGGREGATE_MARKER:
            raise ProtocolError("not an aggregate certificate")
        signers, aggregate = reader.blob(), reader.fixed(bls.SIGNATURE_BYTES)
        reader.finish()
        return cls(view, signers, aggregate)

    def signer_ids(self, genesis: Genesis) -> list[int]:
        """The node ids the bitmap names (ProtocolError if the bitmap is malformed for this genesis)."""
        return [genesis.validators[i].node_id for i in bls.bitmap_signers(self.signers, genesis.n)]

    def check(self, genesis: Genesis, height: int, block_hash: bytes, kind: str = "commit") -> None:
        """Raise ConsensusError unless a quorum of genesis validators signed ``kind`` for the block: the
        bitmap names at least n - f validators and the aggregate verifies against the sum of their keys."""
        if genesis.params.votes == 0:
            raise ConsensusError("a chain on the all-to-all vote path certifies with a list of signatures")
        try:
            indices = bls.bitmap_signers(self.signers, genesis.n)
        except ProtocolError as err:
            raise ConsensusError(f"certificate signer bitmap: {err}") from err
        if len(indices) < genesis.quorum:
            raise ConsensusError(f"certificate has {len(indices)} signers, quorum is {genesis.quorum}")
        message = vote_message(kind, genesis.chain_id, self.view, height, block_hash)
        if not genesis.bls_keys.verify_aggregate(indices, message, self.aggregate):
            raise ConsensusError("certificate aggregate signature does not verify for its signers")

    def valid(self, genesis: Genesis, height: int, block_hash: bytes, kind: str) -> bool:
        try:
            self.check(genesis, height, block_hash, kind)
        except ConsensusError:
            return False
        return True


AnyCertificate = CommitCertificate | AggregateCertificate


def decode_certificate(data: bytes) -> AnyCertificate:
    """A stored or transmitted commit certificate of either vote path (ProtocolError if neither)."""
    if len(data) >= 12 and int.from_bytes(data[8:12], "big") == AGGREGATE_MARKER:
        return AggregateCertificate.decode(data)
    return CommitCertificate.decode(data)


def certificate_voters(certificate: AnyCertificate, genesis: Genesis) -> list[int]:
    """The validators a commit certificate names: its votes' voters, or its signer bitmap's."""
    if isinstance(certificate, AggregateCertificate):
        return certificate.signer_ids(genesis)
    return [voter for voter, _ in certificate.votes]
