"""sha256 proof-of-work: the midstate grinder that miners and proof makers share.

The header prefix is absorbed once; each nonce costs one ``copy()`` of the hash state plus the last
8 bytes. That midstate trick is what keeps the inner loop near the raw speed of the core.
"""

from __future__ import annotations

import hashlib

NONCE_BYTES = 8


def leading_zero_bits(digest: bytes) -> int:
    """Number of leading zero bits of ``digest`` read as a big-endian integer."""
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


def meets_work(digest: bytes, work_bits: int) -> bool:
    return int.from_bytes(digest, "big") >> (len(digest) * 8 - work_bits) == 0 if work_bits else True


def grind(prefix: bytes, work_bits: int, start_nonce: int = 0, max_nonces: int | None = None) -> int | None:
    """First nonce from ``start_nonce`` whose ``sha256(prefix || nonce)`` has ``work_bits`` leading zeros.

    Returns None when ``max_nonces`` were tried without success (so callers can check for new work).
    """
    midstate = hashlib.sha256(prefix)
    limit = (1 << (256 - work_bits)) if work_bits else 1 << 256
    end = start_nonce + max_nonces if max_nonces is not None else 1 << 64
    from_bytes = int.from_bytes
    for nonce in range(start_nonce, end):
        state = midstate.copy()
        state.update(nonce.to_bytes(NONCE_BYTES, "big"))
        if from_bytes(state.digest(), "big") < limit:
            return nonce
    return None
