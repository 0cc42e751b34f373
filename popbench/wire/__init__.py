"""The framed binary wire protocol: frames, messages and their codec (spec: docs/protocol.md)."""

from popbench.wire.enums import DisconnectReason, ItemKind, RejectReason, Role
from popbench.wire.framing import (
    HEADER,
    HEADER_BYTES,
    MAX_FRAME_BYTES,
    FrameDecoder,
    FramedProtocol,
    encode_frame,
)
from popbench.wire.messages import *  # noqa: F403  (every message class, by design one namespace)
from popbench.wire.messages import CONSENSUS_MESSAGES, MESSAGE_TYPES, PROTOCOL_VERSION, Message, decode_message

__all__ = [  # noqa: PLE0604  (the message class names are strings built from the type map)
    "HEADER", "HEADER_BYTES", "MAX_FRAME_BYTES", "FramedProtocol", "FrameDecoder", "encode_frame",
    "CONSENSUS_MESSAGES", "MESSAGE_TYPES", "PROTOCOL_VERSION", "Message", "decode_message",
    "DisconnectReason", "ItemKind", "RejectReason", "Role",
    *[cls.__name__ for cls in MESSAGE_TYPES],
]  # fmt: skip
