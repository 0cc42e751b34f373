"""A proof: a user's signed claim carrying a small proof-of-work (layout: docs/design.md, "Model").

Encoding: ``chain_id (32) | owner (33) | work_bits u8 | run_tag u32 | submitted_ns u64 | payload_len u16
| payload | nonce u64 | signature (64)``, big-endian. Everything before the nonce is the *work prefix*:
miners absorb it once and copy the hash state per nonce.
"""

from __future__ import annotations

import struct

from popbench import crypto
from popbench.errors import InvalidProof, ProtocolError
from popbench.mining import grind, meets_work
from popbench.model.hashing import sha256
from popbench.wire.enums import RejectReason

DOMAIN = b"popbench/proof/v1"
MAX_PAYLOAD_BYTES = 1024
HEAD = struct.Struct(">32s33sBIQH")
NONCE = struct.Struct(">Q")
SIGNATURE_BYTES = 64
MIN_ENCODED_BYTES = HEAD.size + NONCE.size + SIGNATURE_BYTES


class Proof:
    """One proof; ``id`` is the sha256 of the signed bytes (the signature itself is not part of it)."""

    __slots__ = ("chain_id", "owner", "work_bits", "run_tag", "submitted_ns", "payload", "nonce", "signature", "_id")

    def __init__(self, chain_id: bytes, owner: bytes, work_bits: int, run_tag: int, submitted_ns: int,
                 payload: bytes, nonce: int = 0, signature: bytes = bytes(SIGNATURE_BYTES)) -> None:  # fmt: skip
        self.chain_id = chain_id
        self.owner = owner
        self.work_bits = work_bits
        self.run_tag = run_tag
        self.submitted_ns = submitted_ns
        self.payload = payload
        self.nonce = nonce
        self.signature = signature
        self._id: bytes | None = None

    def work_prefix(self) -> bytes:
        head = HEAD.pack(self.chain_id, self.owner, self.work_bits, self.run_tag, self.submitted_ns, len(self.payload))
        return head + self.payload

    def work_digest(self) -> bytes:
        return sha256(self.work_prefix() + NONCE.pack(self.nonce))

    def signing_bytes(self) -> bytes:
        return DOMAIN + self.work_prefix() + NONCE.pack(self.nonce)

    @property
    def id(self) -> bytes:
        if self._id is None:
            self._id = sha256(self.signing_bytes())
        return self._id

    def sign(self, key: crypto.SigningKey) -> None:
        self._id = None
        self.signature = key.sign(self.signing_bytes())

    def encode(self) -> bytes:
        if len(self.payload) > MAX_PAYLOAD_BYTES:
            raise ProtocolError(f"proof payload over {MAX_PAYLOAD_BYTES} bytes")
        return self.work_prefix() + NONCE.pack(self.nonce) + self.signature

    @staticmethod
    def id_of_encoded(data: bytes) -> bytes:
        """The id of the proof ``data`` encodes, without decoding it (the signed bytes are the encoding
        less its signature); only meaningful for a well-formed encoding."""
        return sha256(DOMAIN + data[:-SIGNATURE_BYTES])

    @classmethod
    def decode(cls, data: bytes) -> Proof:
        if len(data) < MIN_ENCODED_BYTES:
            raise ProtocolError(f"proof of {len(data)} bytes is too short")
        chain_id, owner, work_bits, run_tag, submitted_ns, size = HEAD.unpack_from(data)
        if size > MAX_PAYLOAD_BYTES or len(data) != MIN_ENCODED_BYTES + size:
            raise ProtocolError(f"proof length {len(data)} does not match its payload length {size}")
        end = HEAD.size + size
        (nonce,) = NONCE.unpack_from(data, end)
        signature = bytes(data[end + NONCE.size :])
        return cls(chain_id, owner, work_bits, run_tag, submitted_ns, bytes(data[HEAD.size : end]), nonce, signature)

    @classmethod
    def create(cls, key: crypto.SigningKey, chain_id: bytes, payload: bytes, work_bits: int, run_tag: int, submitted_ns: int) -> Proof:
        """Grind the work, then sign: a valid proof for ``chain_id`` at ``work_bits``."""
        proof = cls(chain_id, key.public_key, work_bits, run_tag, submitted_ns, payload)
        nonce = grind(proof.work_prefix(), work_bits)
        assert nonce is not None
        proof.nonce = nonce
        proof.sign(key)
        return proof


def check_proof(proof: Proof, chain_id: bytes, min_work_bits: int) -> None:
    """Raise InvalidProof with the reason unless ``proof`` is valid; the signature is checked last."""
    if proof.chain_id != chain_id:
        raise InvalidProof(RejectReason.WRONG_CHAIN, "proof is for another chain")
    required = max(proof.work_bits, min_work_bits)
    if not meets_work(proof.work_digest(), required):
        raise InvalidProof(RejectReason.LOW_WORK, f"work digest misses {required} leading zero bits")
    if not crypto.verify(proof.owner, proof.signing_bytes(), proof.signature):
        raise InvalidProof(RejectReason.BAD_SIGNATURE, "signature does not verify for the owner key")
