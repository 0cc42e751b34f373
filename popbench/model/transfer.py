"""A transfer between accounts: PAY moves balance to a recipient, BOND moves balance into stake.

Encoding: ``chain_id (32) | sender (33, public key) | recipient (20, address) | amount u64 | fee u64 |
account_nonce u64 | kind u8 | signature (64)``, big-endian; the id is the sha256 of the signed bytes.
"""

from __future__ import annotations

import enum
import struct

from popbench import crypto
from popbench.errors import InvalidProof, ProtocolError
from popbench.model.hashing import sha256
from popbench.wire.enums import RejectReason

DOMAIN = b"popbench/transfer/v1"
BODY = struct.Struct(">32s33s20sQQQB")
SIGNATURE_BYTES = 64


class TransferKind(enum.IntEnum):
    PAY = 0
    BOND = 1


class Transfer:
    __slots__ = ("chain_id", "sender", "recipient", "amount", "fee", "account_nonce", "kind", "signature", "_id")

    def __init__(self, chain_id: bytes, sender: bytes, recipient: bytes, amount: int, fee: int, account_nonce: int,
                 kind: TransferKind = TransferKind.PAY, signature: bytes = bytes(SIGNATURE_BYTES)) -> None:  # fmt: skip
        self.chain_id = chain_id
        self.sender = sender
        self.recipient = recipient
        self.amount = amount
        self.fee = fee
        self.account_nonce = account_nonce
        self.kind = kind
        self.signature = signature
        self._id: bytes | None = None

    def body(self) -> bytes:
        return BODY.pack(self.chain_id, self.sender, self.recipient, self.amount, self.fee, self.account_nonce, self.kind)

    def signing_bytes(self) -> bytes:
        return DOMAIN + self.body()

    @property
    def id(self) -> bytes:
        if self._id is None:
            self._id = sha256(self.signing_bytes())
        return self._id

    def encode(self) -> bytes:
        return self.body() + self.signature

    @staticmethod
    def id_of_encoded(data: bytes) -> bytes:
        """The id of the transfer ``data`` encodes, without decoding it (as Proof.id_of_encoded)."""
        return sha256(DOMAIN + data[:-SIGNATURE_BYTES])

    @classmethod
    def decode(cls, data: bytes) -> Transfer:
        if len(data) != BODY.size + SIGNATURE_BYTES:
            raise ProtocolError(f"transfer must be {BODY.size + SIGNATURE_BYTES} bytes, got {len(data)}")
        chain_id, sender, recipient, amount, fee, nonce, kind = BODY.unpack_from(data)
        try:
            kind = TransferKind(kind)
        except ValueError as err:
            raise ProtocolError(f"unknown transfer kind {kind}") from err
        return cls(chain_id, sender, recipient, amount, fee, nonce, kind, bytes(data[BODY.size :]))

    @classmethod
    def create(cls, key: crypto.SigningKey, chain_id: bytes, recipient: bytes, amount: int, fee: int,
               account_nonce: int, kind: TransferKind = TransferKind.PAY) -> Transfer:  # fmt: skip
        transfer = cls(chain_id, key.public_key, recipient, amount, fee, account_nonce, kind)
        transfer.signature = key.sign(transfer.signing_bytes())
        return transfer


def check_transfer_signature(transfer: Transfer, chain_id: bytes) -> None:
    if transfer.chain_id != chain_id:
        raise InvalidProof(RejectReason.WRONG_CHAIN, "transfer is for another chain")
    if not crypto.verify(transfer.sender, transfer.signing_bytes(), transfer.signature):
        raise InvalidProof(RejectReason.BAD_SIGNATURE, "transfer signature does not verify")
