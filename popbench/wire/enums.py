"""Small enums carried on the wire as one unsigned byte."""

from __future__ import annotations

import enum


class DisconnectReason(enum.IntEnum):
    """Why a connection is being closed; sent in DISCONNECT and counted by the receiver."""

    REQUESTED = 0
    PROTOCOL_ERROR = 1
    WRONG_VERSION = 2
    WRONG_CHAIN = 3
    BAD_SIGNATURE = 4
    HANDSHAKE_TIMEOUT = 5
    DUPLICATE_PEER = 6
    UNKNOWN_VALIDATOR = 7
    TOO_MANY_PEERS = 8
    SHUTDOWN = 9
    SLOW_CONSUMER = 10
    UNEXPECTED_MESSAGE = 11


class RejectReason(enum.IntEnum):
    """The outcome of a SUBMIT: ACCEPTED, or why the item was refused."""

    ACCEPTED = 0
    BAD_SIGNATURE = 1
    LOW_WORK = 2
    REPLAY = 3
    WRONG_CHAIN = 4
    MALFORMED = 5
    BUSY = 6
    BAD_NONCE = 7
    INSUFFICIENT_BALANCE = 8
    UNKNOWN_ACCOUNT = 9
    NOT_A_VALIDATOR = 10


class Role(enum.IntEnum):
    """What the sender of a HELLO is; only validators may send consensus messages."""

    VALIDATOR = 0
    FOLLOWER = 1
    CLIENT = 2
    MINER = 3


class ItemKind(enum.IntEnum):
    """What a SUBMIT or a gossip batch carries."""

    PROOF = 0
    TRANSFER = 1


def parse_enum(enum_type: type[enum.IntEnum], value: int) -> enum.IntEnum:
    """Map a wire byte to ``enum_type`` or raise the protocol's error for an unknown value."""
    from popbench.errors import ProtocolError

    try:
        return enum_type(value)
    except ValueError as err:
        raise ProtocolError(f"unknown {enum_type.__name__} value {value}") from err
