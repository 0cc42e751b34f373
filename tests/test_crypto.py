"""secp256k1 behind popbench.crypto: both backends accept exactly the same signatures, and refuse the rest."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from popbench import crypto
from popbench.errors import CryptoError, PopbenchError

BACKENDS = ("coincurve", "ecdsa")
MESSAGES = [b"", b"a proof", bytes(range(256)) * 4]
KEY = crypto.derive_key("test-crypto", 0)
OTHER_KEY = crypto.derive_key("test-crypto", 1)


@pytest.fixture(autouse=True)
def restore_backend() -> Iterator[None]:
    before = crypto.backend_name()
    yield
    crypto.set_backend(before)


def high_s(signature: bytes) -> bytes:
    """The same signature with s replaced by n - s: valid ECDSA maths, refused by the low-s rule."""
    r, s = signature[:32], int.from_bytes(signature[32:], "big")
    return r + (crypto.CURVE_ORDER - s).to_bytes(32, "big")


@pytest.mark.parametrize("signer", BACKENDS)
@pytest.mark.parametrize("verifier", BACKENDS)
@pytest.mark.parametrize("message", MESSAGES, ids=["empty", "short", "long"])
def test_a_signature_from_either_backend_verifies_on_either_backend(signer: str, verifier: str, message: bytes) -> None:
    signature = crypto.get_backend(signer).sign(KEY.secret, message)
    assert len(signature) == crypto.SIGNATURE_BYTES
    assert crypto.get_backend(verifier).verify(KEY.public_key, message, signature)


@pytest.mark.parametrize("message", MESSAGES, ids=["empty", "short", "long"])
def test_both_backends_make_the_same_deterministic_low_s_signature(message: bytes) -> None:
    signatures = {crypto.get_backend(name).sign(KEY.secret, message) for name in BACKENDS}
    assert len(signatures) == 1
    (signature,) = signatures
    assert int.from_bytes(signature[32:], "big") <= crypto.HALF_ORDER


@pytest.mark.parametrize("verifier", BACKENDS)
def test_a_high_s_signature_is_refused_by_both_backends(verifier: str) -> None:
    signature = crypto.get_backend("coincurve").sign(KEY.secret, b"message")
    assert crypto.get_backend(verifier).verify(KEY.public_key, b"message", signature)
    assert not crypto.get_backend(verifier).verify(KEY.public_key, b"message", high_s(signature))


@pytest.mark.parametrize("verifier", BACKENDS)
def test_a_signature_does_not_verify_for_another_key(verifier: str) -> None:
    signature = KEY.sign(b"message")
    assert not crypto.get_backend(verifier).verify(OTHER_KEY.public_key, b"message", signature)


@pytest.mark.parametrize("verifier", BACKENDS)
def test_a_signature_does_not_verify_for_another_message(verifier: str) -> None:
    signature = KEY.sign(b"message")
    assert not crypto.get_backend(verifier).verify(KEY.public_key, b"messagf", signature)


@pytest.mark.parametrize("verifier", BACKENDS)
@pytest.mark.parametrize(
    ("public_key", "signature"),
    [
        (KEY.public_key, b""),
        (KEY.public_key, bytes(63)),
        (KEY.public_key, bytes(64)),
        (KEY.public_key, b"\xff" * 64),
        (b"", None),
        (b"\x02" + b"\xff" * 32, None),
        (KEY.public_key[:-1], None),
    ],
    ids=["empty-sig", "short-sig", "zero-sig", "ff-sig", "empty-key", "off-curve-key", "short-key"],
)
def test_malformed_keys_and_signatures_are_refused_without_an_exception(verifier: str, public_key: bytes,
                                                                        signature: bytes | None) -> None:  # fmt: skip
    signature = KEY.sign(b"message") if signature is None else signature
    assert crypto.get_backend(verifier).verify(public_key, b"message", signature) is False


def test_derive_key_is_deterministic_and_distinct_per_seed_and_index() -> None:
    assert crypto.derive_key("seed", 3).secret == crypto.derive_key(b"seed", 3).secret
    secrets = {crypto.derive_key(seed, index).secret for seed in ("seed", "other") for index in range(4)}
    assert len(secrets) == 8


def test_from_seed_is_deterministic_and_gives_a_matching_public_key() -> None:
    key = crypto.SigningKey.from_seed(b"some seed")
    assert key.secret == crypto.SigningKey.from_seed(b"some seed").secret
    assert len(key.public_key) == crypto.PUBKEY_BYTES and key.public_key[0] in (2, 3)
    assert crypto.SigningKey.from_secret(key.secret).public_key == key.public_key


def test_generate_gives_fresh_keys() -> None:
    assert crypto.SigningKey.generate().secret != crypto.SigningKey.generate().secret


@pytest.mark.parametrize("secret", [bytes(32), crypto.CURVE_ORDER.to_bytes(32, "big"), b"\x01" * 31, b"\x01" * 33],
                         ids=["zero", "order", "short", "long"])  # fmt: skip
def test_a_secret_outside_the_curve_range_is_refused(secret: bytes) -> None:
    with pytest.raises(CryptoError):
        crypto.SigningKey(secret)


@pytest.mark.parametrize("name", BACKENDS)
def test_set_backend_switches_the_module_level_sign_and_verify(name: str) -> None:
    crypto.set_backend(name)
    assert crypto.backend_name() == name
    signature = KEY.sign(b"switched")
    assert crypto.verify(KEY.public_key, b"switched", signature)
    assert not crypto.verify(KEY.public_key, b"switched", high_s(signature))


def test_an_unknown_backend_is_refused_with_a_popbench_error() -> None:
    with pytest.raises(CryptoError, match="unknown crypto backend") as caught:
        crypto.set_backend("openssl")
    assert isinstance(caught.value, PopbenchError)
    assert crypto.backend_name() in BACKENDS


@pytest.mark.parametrize("name", BACKENDS)
def test_the_popbench_crypto_variable_chooses_the_backend_at_import(name: str) -> None:
    # A fresh interpreter, because the variable is read once, when the module is imported.
    script = "from popbench import crypto; print(crypto.backend_name())"
    env = {**os.environ, "POPBENCH_CRYPTO": name}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == name


def test_an_unknown_popbench_crypto_variable_fails_the_import() -> None:
    script = "from popbench import crypto"
    env = {**os.environ, "POPBENCH_CRYPTO": "nope"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "unknown crypto backend" in result.stderr
