"""The one exception hierarchy of popbench and its harness.

Every error raised on purpose derives from :class:`PopbenchError`. Low-level errors (``struct.error``,
``OSError``, ``sqlite3.Error``, ``orjson.JSONDecodeError``) are translated at the module edge with
``raise ... from err`` so callers only ever catch these types.
"""

from __future__ import annotations


class PopbenchError(Exception):
    """Base class of every error popbench raises on purpose."""


class ProtocolError(PopbenchError):
    """Raised when bytes from the wire are not a valid frame or message.

    The receiving connection is closed and counted; the node keeps running.
    """


class FrameTooLarge(ProtocolError):
    """Raised when a frame header announces a body over the hard maximum, before the body is read."""


class HandshakeError(PopbenchError):
    """Raised when a peer's HELLO or HELLO_ACK is refused (version, chain id, signature, timeout)."""

    def __init__(self, reason: object, detail: str = "") -> None:
        super().__init__(f"{getattr(reason, 'name', reason)}: {detail}" if detail else str(reason))
        self.reason = reason
        self.detail = detail


class CryptoError(PopbenchError):
    """Raised when a key or signature cannot be parsed, or a crypto backend is unknown."""


class InvalidProof(PopbenchError):
    """Raised when a proof or transfer is refused; ``reason`` is a :class:`RejectReason`."""

    def __init__(self, reason: object, detail: str = "") -> None:
        super().__init__(f"{getattr(reason, 'name', reason)}: {detail}" if detail else str(reason))
        self.reason = reason
        self.detail = detail


class ConfigError(PopbenchError):
    """Raised when a profile, genesis or node configuration has a bad key or value.

    The message always names the offending key and, where known, the file.
    """

    def __init__(self, message: str, key: str | None = None, source: str | None = None) -> None:
        where = f"{source}: " if source else ""
        what = f"{key}: " if key else ""
        super().__init__(f"{where}{what}{message}")
        self.key = key
        self.source = source


class StorageError(PopbenchError):
    """Raised when the node's SQLite store cannot be opened, read or written."""


class ConsensusError(PopbenchError):
    """Raised when a block, vote or certificate breaks the consensus rules."""


class SyncError(PopbenchError):
    """Raised when a snapshot or a fetched block fails its checks (root, certificate, height)."""


class ClientError(PopbenchError):
    """Raised when a node cannot be reached, refuses the handshake, or does not answer in time."""


class HarnessError(PopbenchError):
    """Raised when the harness cannot start, drive or measure a run."""


class NodeStartError(HarnessError):
    """Raised when a child process dies or stays silent before it reports ready."""
