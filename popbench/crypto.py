"""secp256k1 signing and verification behind one small interface, with two backends.

- ``coincurve`` (default): libsecp256k1 through cffi; the fast path every validator uses.
- ``ecdsa``: pure Python; slow, but needs no C library.

Signatures are 64-byte compact ``r || s`` with low s over ``sha256(message)``, deterministic (RFC 6979).
libsecp256k1 refuses high-s signatures, so the pure-Python backend refuses them too: both accept exactly
the same set, and each verifies the other's signatures. Select with ``POPBENCH_CRYPTO=coincurve|ecdsa``
or :func:`set_backend`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Protocol

import coincurve
import ecdsa
from coincurve._libsecp256k1 import ffi, lib
from ecdsa.util import sigdecode_string, sigencode_string

from popbench.errors import CryptoError

PUBKEY_BYTES = 33
SIGNATURE_BYTES = 64
CURVE_ORDER = ecdsa.SECP256k1.order
HALF_ORDER = CURVE_ORDER // 2
KEY_CACHE_LIMIT = 65536  # parsed public keys kept; validators' and proof owners' keys repeat


class Backend(Protocol):
    name: str

    def sign(self, secret: bytes, message: bytes) -> bytes: ...

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool: ...


class CoincurveBackend:
    """libsecp256k1: parses compact signatures and cached public keys directly through its cffi lib."""

    name = "coincurve"

    def __init__(self) -> None:
        self._context = coincurve.GLOBAL_CONTEXT.ctx
        self._keys: dict[bytes, object] = {}

    def sign(self, secret: bytes, message: bytes) -> bytes:
        der = coincurve.PrivateKey(secret).sign(message, hasher=_sha256)
        return bytes(coincurve.ecdsa.serialize_compact(coincurve.ecdsa.der_to_cdata(der)))

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        if len(signature) != SIGNATURE_BYTES:
            return False
        parsed_key = self._parsed_key(public_key)
        if parsed_key is None:
            return False
        sig = ffi.new("secp256k1_ecdsa_signature *")
        if not lib.secp256k1_ecdsa_signature_parse_compact(self._context, sig, signature):
            return False
        digest = hashlib.sha256(message).digest()
        return bool(lib.secp256k1_ecdsa_verify(self._context, sig, digest, parsed_key))

    def _parsed_key(self, public_key: bytes) -> object | None:
        parsed = self._keys.get(public_key)
        if parsed is not None:
            return parsed
        if len(public_key) != PUBKEY_BYTES:
            return None
        parsed = ffi.new("secp256k1_pubkey *")
        if not lib.secp256k1_ec_pubkey_parse(self._context, parsed, public_key, len(public_key)):
            return None
        if len(self._keys) >= KEY_CACHE_LIMIT:
            self._keys.clear()
        self._keys[public_key] = parsed
        return parsed  # type: ignore[no-any-return]  # a cffi pointer, opaque to mypy


class EcdsaBackend:
    """python-ecdsa, made to agree with libsecp256k1: low s when signing, high s refused."""

    name = "ecdsa"

    def __init__(self) -> None:
        self._keys: dict[bytes, ecdsa.VerifyingKey] = {}

    def sign(self, secret: bytes, message: bytes) -> bytes:
        key = ecdsa.SigningKey.from_string(secret, curve=ecdsa.SECP256k1, hashfunc=hashlib.sha256)
        signature = key.sign_deterministic(message, hashfunc=hashlib.sha256, sigencode=sigencode_string)
        r, s = sigdecode_string(signature, CURVE_ORDER)
        if s > HALF_ORDER:
            s = CURVE_ORDER - s
        return bytes(sigencode_string(r, s, CURVE_ORDER))

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        if len(signature) != SIGNATURE_BYTES:
            return False
        r, s = sigdecode_string(signature, CURVE_ORDER)
        if not (0 < r < CURVE_ORDER and 0 < s <= HALF_ORDER):
            return False
        key = self._key(public_key)
        if key is None:
            return False
        try:
            return bool(key.verify(signature, message, hashfunc=hashlib.sha256, sigdecode=sigdecode_string))
        except (ecdsa.BadSignatureError, ecdsa.errors.MalformedPointError, AssertionError):
            return False

    def _key(self, public_key: bytes) -> ecdsa.VerifyingKey | None:
        key = self._keys.get(public_key)
        if key is None:
            try:
                key = ecdsa.VerifyingKey.from_string(public_key, curve=ecdsa.SECP256k1, hashfunc=hashlib.sha256)
            except (ecdsa.errors.MalformedPointError, ValueError, AssertionError):
                return None
            if len(self._keys) >= KEY_CACHE_LIMIT:
                self._keys.clear()
            self._keys[public_key] = key
        return key


def _sha256(message: bytes) -> bytes:
    return hashlib.sha256(message).digest()


_BACKENDS: dict[str, Backend] = {}
_FACTORIES: dict[str, Callable[[], Backend]] = {"coincurve": CoincurveBackend, "ecdsa": EcdsaBackend}


def get_backend(name: str) -> Backend:
    if name not in _FACTORIES:
        raise CryptoError(f"unknown crypto backend {name!r}; known: {', '.join(sorted(_FACTORIES))}")
    if name not in _BACKENDS:
        _BACKENDS[name] = _FACTORIES[name]()
    return _BACKENDS[name]


_active: Backend = get_backend(os.environ.get("POPBENCH_CRYPTO", "coincurve"))


def set_backend(name: str) -> None:
    global _active
    _active = get_backend(name)


def backend_name() -> str:
    return _active.name


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``public_key``'s over ``message``; False (never an exception) on bad input."""
    return _active.verify(public_key, message, signature)


class SigningKey:
    """A secp256k1 private key with its compressed public key."""

    __slots__ = ("secret", "public_key")

    def __init__(self, secret: bytes) -> None:
        value = int.from_bytes(secret, "big")
        if len(secret) != 32 or not 0 < value < CURVE_ORDER:
            raise CryptoError("a secret key is 32 bytes in [1, n-1]")
        self.secret = secret
        self.public_key: bytes = coincurve.PrivateKey(secret).public_key.format(compressed=True)

    @classmethod
    def from_secret(cls, secret: bytes) -> SigningKey:
        return cls(secret)

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        value = int.from_bytes(hashlib.sha256(seed).digest(), "big") % (CURVE_ORDER - 1) + 1
        return cls(value.to_bytes(32, "big"))

    @classmethod
    def generate(cls) -> SigningKey:
        return cls.from_seed(os.urandom(32))

    def sign(self, message: bytes) -> bytes:
        return _active.sign(self.secret, message)


def derive_key(seed: str | bytes, index: int) -> SigningKey:
    """Key ``index`` of a reproducible family: the same seed and index always give the same key."""
    raw = seed.encode() if isinstance(seed, str) else seed
    return SigningKey.from_seed(raw + b"/" + str(index).encode())
