"""The authenticated handshake, as pure functions (spec: docs/protocol.md, "Handshake").

Both sides send HELLO at once; each answers the other's HELLO with HELLO_ACK, a signature over the
peer's nonce, which proves it holds the private key of the public key it announced.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from popbench import crypto
from popbench.wire import PROTOCOL_VERSION, DisconnectReason, Hello, Role

HELLO_DOMAIN = b"popbench/hello/v1"
HANDSHAKE_TIMEOUT_S = 5.0


def new_nonce() -> bytes:
    return os.urandom(32)


def ack_message(chain_id: bytes, peer_nonce: bytes, own_pubkey: bytes) -> bytes:
    """The bytes a HELLO_ACK signs: domain, chain id, the peer's nonce, the signer's public key."""
    return HELLO_DOMAIN + chain_id + peer_nonce + own_pubkey


def refuse_hello(hello: Hello, chain_id: bytes, validators: Mapping[int, bytes] | None) -> tuple[DisconnectReason, str] | None:
    """Why a peer's HELLO must be refused, or None when it is acceptable.

    ``validators`` is None for a client that does not hold the genesis: it cannot check membership.
    """
    if hello.version != PROTOCOL_VERSION:
        return DisconnectReason.WRONG_VERSION, f"version {hello.version}, expected {PROTOCOL_VERSION}"
    if hello.chain_id != chain_id:
        return DisconnectReason.WRONG_CHAIN, f"chain {hello.chain_id.hex()[:16]}, expected {chain_id.hex()[:16]}"
    if validators is not None and hello.role == Role.VALIDATOR and not is_genesis_validator(hello, validators):
        return DisconnectReason.UNKNOWN_VALIDATOR, f"node {hello.node_id} is not a genesis validator with that key"
    return None


def is_genesis_validator(hello: Hello, validators: Mapping[int, bytes]) -> bool:
    """The HELLO names a validator id with the key the genesis gives it (the ACK then proves the key)."""
    return hello.role == Role.VALIDATOR and validators.get(hello.node_id) == hello.pubkey


def sign_ack(key: crypto.SigningKey, chain_id: bytes, peer_nonce: bytes) -> bytes:
    return key.sign(ack_message(chain_id, peer_nonce, key.public_key))


def ack_is_valid(signature: bytes, chain_id: bytes, own_nonce: bytes, peer_pubkey: bytes) -> bool:
    return crypto.verify(peer_pubkey, ack_message(chain_id, own_nonce, peer_pubkey), signature)
