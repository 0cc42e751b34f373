"""BLS12-381 vote shares and their aggregates (blspy's proof-of-possession scheme, PopSchemeMPL).

The collector vote path (docs/consensus.md, "Votes through collectors") signs PREPARE and COMMIT with
BLS: n - f shares on one message add up to one 96-byte signature that verifies against the sum of the
signers' public keys, so a replica checks a quorum with one pairing instead of n - f ECDSA verifies.

- A public key is a 48-byte compressed G1 point, a signature (share or aggregate) a 96-byte compressed
  G2 point; signing hashes the message to G2 with the PoP scheme's domain separation tag
  (``BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_``).
- **Rogue keys.** Adding public keys is only sound when every key's owner knows its secret: otherwise
  a validator could publish ``pk' = pk_evil - pk_honest`` and forge an "aggregate" of both. Every BLS key
  in a genesis therefore carries a proof of possession (a signature on the key itself, under the PoP
  tag), checked when the genesis is built or loaded (popbench/genesis.py).
- A validator's BLS secret is derived from its ECDSA secret (``bls_key_from_secret``), so the keys file
  keeps its format: one secret per validator, as before.
- Signer sets travel as bitmaps over the genesis validators in genesis order (``signers_bitmap``).

Nothing here raises on malformed input from the wire: a bad point or a bad signature is ``False``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from blspy import G1Element, G2Element, PopSchemeMPL, PrivateKey

from popbench.errors import CryptoError, ProtocolError

PUBLIC_KEY_BYTES = 48
SIGNATURE_BYTES = 96
KEY_DOMAIN = b"popbench/bls-key/v1"


class BlsSecretKey:
    """A validator's BLS secret key: signs vote shares and proves possession of its public key."""

    __slots__ = ("_secret", "public_key")

    def __init__(self, secret: PrivateKey) -> None:
        self._secret = secret
        self.public_key: bytes = bytes(secret.get_g1())

    def sign(self, message: bytes) -> bytes:
        return bytes(PopSchemeMPL.sign(self._secret, message))

    def prove_possession(self) -> bytes:
        return bytes(PopSchemeMPL.pop_prove(self._secret))


def bls_key_from_secret(ecdsa_secret: bytes) -> BlsSecretKey:
    """The BLS key of the validator whose ECDSA secret is ``ecdsa_secret`` (EIP-2333 key generation
    from ``sha256(KEY_DOMAIN || secret)``): reproducible, and no second secret to store."""
    seed = hashlib.sha256(KEY_DOMAIN + ecdsa_secret).digest()
    return BlsSecretKey(PopSchemeMPL.key_gen(seed))


def public_key_point(public_key: bytes) -> G1Element:
    """The G1 point of a 48-byte key; CryptoError if it is not a valid point of the subgroup."""
    try:
        return G1Element.from_bytes(bytes(public_key))
    except (ValueError, RuntimeError, TypeError) as err:
        raise CryptoError(f"not a BLS12-381 public key: {err}") from err


def verify_possession(public_key: bytes, proof: bytes) -> bool:
    """Whether ``proof`` proves possession of the secret behind ``public_key`` (never raises)."""
    try:
        return bool(PopSchemeMPL.pop_verify(G1Element.from_bytes(bytes(public_key)), G2Element.from_bytes(bytes(proof))))
    except (ValueError, RuntimeError, TypeError):
        return False


def signature_point(signature: bytes) -> G2Element | None:
    """The G2 point of a 96-byte signature, subgroup-checked; None if it is not one."""
    try:
        return G2Element.from_bytes(bytes(signature))
    except (ValueError, RuntimeError, TypeError):
        return None


def aggregate(shares: Iterable[bytes]) -> bytes | None:
    """The sum of ``shares``; None if one does not decode. Shares are decoded without the subgroup check
    (a third of the cost); the sum is then decoded with it, so a share off the subgroup cannot slip into
    a certificate that receivers would refuse."""
    try:
        points = [G2Element.from_bytes_unchecked(bytes(share)) for share in shares]
    except (ValueError, RuntimeError, TypeError):
        return None
    if not points:
        return None
    total = bytes(PopSchemeMPL.aggregate(points))
    return total if signature_point(total) is not None else None


class BlsKeyTable:
    """The genesis validators' BLS public keys as points, in genesis order; verifies shares and aggregates.

    The points are decoded once. ``verifications`` counts pairing checks (each share or aggregate
    verified costs one), for the work counters and the simulation's figures.
    """

    def __init__(self, public_keys: Sequence[bytes]) -> None:
        self.points = [public_key_point(key) for key in public_keys]
        self.n = len(self.points)
        self.verifications = 0

    def verify_share(self, index: int, message: bytes, share: bytes) -> bool:
        point = signature_point(share)
        if point is None or not 0 <= index < self.n:
            return False
        self.verifications += 1
        return bool(PopSchemeMPL.verify(self.points[index], message, point))

    def verify_aggregate(self, indices: Sequence[int], message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is the aggregate of the validators at ``indices`` signing ``message``."""
        point = signature_point(signature)
        if point is None or not indices:
            return False
        self.verifications += 1
        return bool(PopSchemeMPL.fast_aggregate_verify([self.points[i] for i in indices], message, point))


# -- signer bitmaps ---------------------------------------------------------------------------------------
def bitmap_bytes(n: int) -> int:
    return (n + 7) // 8


def signers_bitmap(indices: Iterable[int], n: int) -> bytes:
    """Validator i (genesis order) is bit ``0x80 >> (i % 8)`` of byte ``i // 8``; ceil(n / 8) bytes."""
    bits = bytearray(bitmap_bytes(n))
    for index in indices:
        if not 0 <= index < n:
            raise ValueError(f"signer index {index} outside 0..{n - 1}")
        bits[index // 8] |= 0x80 >> (index % 8)
    return bytes(bits)


def bitmap_signers(bitmap: bytes, n: int) -> list[int]:
    """The indices a bitmap names, in order; ProtocolError if its length is not ceil(n / 8) bytes or a
    bit at or beyond n is set (one set of signers, one encoding)."""
    if len(bitmap) != bitmap_bytes(n):
        raise ProtocolError(f"signer bitmap of {len(bitmap)} bytes for {n} validators")
    value = int.from_bytes(bitmap, "big")
    width = 8 * len(bitmap)
    if value & ((1 << (width - n)) - 1):
        raise ProtocolError("signer bitmap names a validator beyond the genesis set")
    return [i for i in range(n) if value >> (width - 1 - i) & 1]
