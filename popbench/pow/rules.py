"""The validity rules of one PoW block against its parent, and the error that names a broken rule.

The block tree (:mod:`popbench.pow.chain`) decides what the parent and the expected bits are; this
module only checks. Cheap checks run first, so a block with bad work costs one hash, not a signature.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable

from popbench.errors import ConsensusError, InvalidProof, ProtocolError
from popbench.mining import meets_work
from popbench.model.transfer import Transfer
from popbench.pow.block import PowBlock

MAX_FUTURE_DRIFT_MS = 15_000  # all nodes share one host clock here; bitcoin allows two hours
CONFIRMATIONS = 6  # a block this deep under the tip is committed: COMMITTED, the safety check, the harness

TransferCheck = Callable[[Transfer], None]  # raises InvalidProof


class Rejection(enum.Enum):
    """Why a block was refused."""

    BAD_HEIGHT = "height is not parent height + 1"
    BAD_WORK_BITS = "work bits differ from the retarget rule's"
    INSUFFICIENT_WORK = "header hash does not meet its work bits"
    TIMESTAMP_BEFORE_PARENT = "timestamp earlier than the parent's"
    TIMESTAMP_IN_FUTURE = "timestamp too far in the future"
    BAD_TRANSFERS_ROOT = "transfers do not match the header's Merkle root"
    TOO_MANY_TRANSFERS = "more transfers than a block may hold"
    MALFORMED_TRANSFER = "a transfer cannot be decoded"
    BAD_TRANSFER = "a transfer's signature or chain is wrong"
    DUPLICATE_TRANSFER = "a transfer is already on this branch"


class InvalidBlock(ConsensusError):
    """Raised when a block breaks a chain rule; ``reason`` is the :class:`Rejection`."""

    def __init__(self, reason: Rejection, detail: str = "") -> None:
        super().__init__(f"{reason.name}: {detail or reason.value}")
        self.reason = reason
        self.detail = detail


def check_header_alone(block: PowBlock) -> None:
    """Checks that need no parent (also run on orphans, so junk is not held)."""
    if not meets_work(block.hash, block.work_bits):
        raise InvalidBlock(Rejection.INSUFFICIENT_WORK, f"hash {block.hash.hex()[:16]} at {block.work_bits} bits")
    if not block.body_matches_root():
        raise InvalidBlock(Rejection.BAD_TRANSFERS_ROOT)


def check_against_parent(block: PowBlock, parent: PowBlock, expected_bits: int, now_ms: int) -> None:
    if block.height != parent.height + 1:
        raise InvalidBlock(Rejection.BAD_HEIGHT, f"height {block.height} on a parent at {parent.height}")
    if block.work_bits != expected_bits:
        raise InvalidBlock(Rejection.BAD_WORK_BITS, f"{block.work_bits} bits, expected {expected_bits}")
    if block.timestamp_ms < parent.timestamp_ms:
        raise InvalidBlock(Rejection.TIMESTAMP_BEFORE_PARENT, f"{block.timestamp_ms} < {parent.timestamp_ms}")
    if block.timestamp_ms > now_ms + MAX_FUTURE_DRIFT_MS:
        raise InvalidBlock(Rejection.TIMESTAMP_IN_FUTURE, f"{block.timestamp_ms - now_ms} ms ahead")


def check_transfers(block: PowBlock, max_transfers: int, check: TransferCheck) -> list[bytes]:
    """Decode and verify every transfer; returns their ids (duplicates inside the block refused)."""
    if len(block.encoded_transfers) > max_transfers:
        raise InvalidBlock(Rejection.TOO_MANY_TRANSFERS, f"{len(block.encoded_transfers)} > {max_transfers}")
    try:
        transfers = block.transfers
    except ProtocolError as err:
        raise InvalidBlock(Rejection.MALFORMED_TRANSFER, str(err)) from err
    ids = [transfer.id for transfer in transfers]
    if len(set(ids)) != len(ids):
        raise InvalidBlock(Rejection.DUPLICATE_TRANSFER, "twice in one block")
    for transfer in transfers:
        try:
            check(transfer)
        except InvalidProof as err:
            raise InvalidBlock(Rejection.BAD_TRANSFER, f"{transfer.id.hex()[:16]}: {err}") from err
    return ids


def refuse_duplicates(ids: Iterable[bytes], already_on_branch: Callable[[bytes], bool]) -> None:
    for transfer_id in ids:
        if already_on_branch(transfer_id):
            raise InvalidBlock(Rejection.DUPLICATE_TRANSFER, transfer_id.hex()[:16])
