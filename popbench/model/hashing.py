"""Hashing helpers shared by the model: ids are sha256, addresses are a public key's hash prefix."""

from __future__ import annotations

import hashlib

ADDRESS_BYTES = 20


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def address_of(public_key: bytes) -> bytes:
    """The account address of a public key: the first 20 bytes of its sha256."""
    return hashlib.sha256(public_key).digest()[:ADDRESS_BYTES]
