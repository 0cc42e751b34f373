"""The proof-of-work block: header, transfers, encoding and the header hash.

Header (big-endian, 101 bytes): ``prev_hash (32) | height u64 | timestamp_ms u64 | work_bits u8 |
miner u32 | transfers_root (32) | nonce u64``. The block hash is ``sha256(header)``; the nonce is the
last 8 bytes, so a miner absorbs the 93-byte prefix once and grinds only the nonce
(:func:`popbench.mining.grind`). ``transfers_root`` is the Merkle root of the encoded transfers
(signatures included), so the hash commits to every byte of the block.

Encoding: ``header | count u32 | count x encoded transfer (fixed size each)``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from popbench.errors import ProtocolError
from popbench.merkle import merkle_root
from popbench.mining import NONCE_BYTES
from popbench.model.hashing import sha256
from popbench.model.transfer import BODY as TRANSFER_BODY
from popbench.model.transfer import SIGNATURE_BYTES, Transfer

PREFIX = struct.Struct(">32sQQBI32s")  # the header without its nonce
NONCE = struct.Struct(">Q")
HEADER_BYTES = PREFIX.size + NONCE_BYTES
COUNT = struct.Struct(">I")
TRANSFER_BYTES = TRANSFER_BODY.size + SIGNATURE_BYTES
MAX_WORK_BITS = 64  # the grinder's limit (ChainParams refuses more)


class PowBlock:
    """One block of the proof-of-work chain; ``transfers`` are decoded, ``encoded_transfers`` are their bytes."""

    __slots__ = ("prev_hash", "height", "timestamp_ms", "work_bits", "miner", "transfers_root", "nonce",
                 "encoded_transfers", "_transfers", "_hash")  # fmt: skip

    def __init__(self, prev_hash: bytes, height: int, timestamp_ms: int, work_bits: int, miner: int,
                 encoded_transfers: Sequence[bytes], nonce: int = 0, transfers_root: bytes | None = None) -> None:  # fmt: skip
        self.prev_hash = prev_hash
        self.height = height
        self.timestamp_ms = timestamp_ms
        self.work_bits = work_bits
        self.miner = miner
        self.encoded_transfers = list(encoded_transfers)
        self.transfers_root = merkle_root(self.encoded_transfers) if transfers_root is None else transfers_root
        self.nonce = nonce
        self._transfers: list[Transfer] | None = None
        self._hash: bytes | None = None

    # -- header ------------------------------------------------------------------------------------
    def header_prefix(self) -> bytes:
        """The header without its nonce: what a miner absorbs once before grinding."""
        try:
            return PREFIX.pack(self.prev_hash, self.height, self.timestamp_ms, self.work_bits, self.miner, self.transfers_root)
        except struct.error as err:
            raise ProtocolError(f"PoW block header field out of range: {err}") from err

    def header_bytes(self) -> bytes:
        return self.header_prefix() + NONCE.pack(self.nonce)

    @property
    def hash(self) -> bytes:
        if self._hash is None:
            self._hash = sha256(self.header_bytes())
        return self._hash

    @property
    def work(self) -> int:
        """Expected hashes to find this block: 2 ** work_bits."""
        return 1 << self.work_bits

    def with_nonce(self, nonce: int) -> PowBlock:
        return PowBlock(self.prev_hash, self.height, self.timestamp_ms, self.work_bits, self.miner,
                        self.encoded_transfers, nonce, self.transfers_root)  # fmt: skip

    # -- body --------------------------------------------------------------------------------------
    @property
    def transfers(self) -> list[Transfer]:
        if self._transfers is None:
            self._transfers = [Transfer.decode(raw) for raw in self.encoded_transfers]
        return self._transfers

    @property
    def transfer_ids(self) -> list[bytes]:
        return [transfer.id for transfer in self.transfers]

    def body_matches_root(self) -> bool:
        return merkle_root(self.encoded_transfers) == self.transfers_root

    # -- encoding ----------------------------------------------------------------------------------
    def encode(self) -> bytes:
        parts = [self.header_bytes(), COUNT.pack(len(self.encoded_transfers))]
        for raw in self.encoded_transfers:
            if len(raw) != TRANSFER_BYTES:
                raise ProtocolError(f"a transfer is {TRANSFER_BYTES} bytes, got {len(raw)}")
            parts.append(raw)
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> PowBlock:
        """Parse an encoded block; raises ProtocolError on any malformed input (never checks consensus rules)."""
        if len(data) < HEADER_BYTES + COUNT.size:
            raise ProtocolError(f"PoW block of {len(data)} bytes is shorter than a header")
        prev_hash, height, timestamp_ms, work_bits, miner, root = PREFIX.unpack_from(data)
        (nonce,) = NONCE.unpack_from(data, PREFIX.size)
        (count,) = COUNT.unpack_from(data, HEADER_BYTES)
        start = HEADER_BYTES + COUNT.size
        if len(data) != start + count * TRANSFER_BYTES:
            raise ProtocolError(f"PoW block announces {count} transfers but holds {len(data) - start} body bytes")
        raws = [bytes(data[i : i + TRANSFER_BYTES]) for i in range(start, len(data), TRANSFER_BYTES)]
        return cls(prev_hash, height, timestamp_ms, work_bits, miner, raws, nonce, root)

    def __repr__(self) -> str:
        return f"PowBlock(height={self.height}, hash={self.hash.hex()[:12]}, bits={self.work_bits}, miner={self.miner})"


def genesis_block(chain_id: bytes, work_bits: int) -> PowBlock:
    """Height 0 of every node's tree: fixed by the chain id, never mined, worth no work."""
    return PowBlock(chain_id, 0, 0, work_bits, 0, [])
