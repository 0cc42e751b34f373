"""Reader and Writer for the variable-length fields of message bodies.

Every multi-byte integer is big-endian (network order). Variable fields are length-prefixed:
``blob`` with a u32 length, ``text`` (UTF-8) with a u8 length, lists with a u32 count. Any short read,
bad UTF-8 or trailing byte raises :class:`~popbench.errors.ProtocolError` and nothing else.
"""

from __future__ import annotations

import struct
from typing import Any

from popbench.errors import ProtocolError

U8 = struct.Struct(">B")
U16 = struct.Struct(">H")
U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")
HASH_BYTES = 32
MAX_TEXT_BYTES = 255


class Reader:
    """Reads fields from one message body, front to back."""

    __slots__ = ("_buf", "_pos")

    def __init__(self, buf: bytes | bytearray | memoryview) -> None:
        self._buf = buf
        self._pos = 0

    def unpack(self, layout: struct.Struct) -> tuple[Any, ...]:
        pos = self._pos
        end = pos + layout.size
        if end > len(self._buf):
            raise ProtocolError(f"body too short: need {end} bytes, have {len(self._buf)}")
        self._pos = end
        return layout.unpack_from(self._buf, pos)

    def u8(self) -> int:
        return int(self.unpack(U8)[0])

    def u16(self) -> int:
        return int(self.unpack(U16)[0])

    def u32(self) -> int:
        return int(self.unpack(U32)[0])

    def u64(self) -> int:
        return int(self.unpack(U64)[0])

    def fixed(self, size: int) -> bytes:
        pos = self._pos
        end = pos + size
        if end > len(self._buf):
            raise ProtocolError(f"body too short: need {end} bytes, have {len(self._buf)}")
        self._pos = end
        return bytes(self._buf[pos:end])

    def blob(self) -> bytes:
        return self.fixed(self.u32())

    def text(self) -> str:
        raw = self.fixed(self.u8())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ProtocolError("text field is not UTF-8") from err

    def blobs(self) -> list[bytes]:
        count = self.u32()
        self._check_count(count, 4)
        return [self.blob() for _ in range(count)]

    def hashes(self) -> list[bytes]:
        count = self.u32()
        self._check_count(count, HASH_BYTES)
        raw = self.fixed(count * HASH_BYTES)
        return [raw[i : i + HASH_BYTES] for i in range(0, len(raw), HASH_BYTES)]

    def rest(self) -> bytes:
        raw = bytes(self._buf[self._pos :])
        self._pos = len(self._buf)
        return raw

    def finish(self) -> None:
        if self._pos != len(self._buf):
            raise ProtocolError(f"{len(self._buf) - self._pos} trailing bytes in body")

    def _check_count(self, count: int, min_item_bytes: int) -> None:
        # Refuse a count the remaining bytes cannot hold before allocating anything for it.
        if count * min_item_bytes > len(self._buf) - self._pos:
            raise ProtocolError(f"list count {count} exceeds the body")


class Writer:
    """Collects encoded fields; ``getvalue`` joins them once."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def pack(self, layout: struct.Struct, *values: object) -> Writer:
        self._parts.append(layout.pack(*values))
        return self

    def u8(self, value: int) -> Writer:
        return self.pack(U8, value)

    def u32(self, value: int) -> Writer:
        return self.pack(U32, value)

    def u64(self, value: int) -> Writer:
        return self.pack(U64, value)

    def fixed(self, value: bytes, size: int) -> Writer:
        if len(value) != size:
            raise ProtocolError(f"fixed field must be {size} bytes, got {len(value)}")
        self._parts.append(value)
        return self

    def blob(self, value: bytes) -> Writer:
        self._parts.append(U32.pack(len(value)))
        self._parts.append(value)
        return self

    def text(self, value: str) -> Writer:
        raw = value.encode("utf-8")
        if len(raw) > MAX_TEXT_BYTES:
            raise ProtocolError(f"text field over {MAX_TEXT_BYTES} bytes")
        self._parts.append(U8.pack(len(raw)))
        self._parts.append(raw)
        return self

    def blobs(self, values: list[bytes]) -> Writer:
        self._parts.append(U32.pack(len(values)))
        for value in values:
            self.blob(value)
        return self

    def hashes(self, values: list[bytes]) -> Writer:
        self._parts.append(U32.pack(len(values)))
        for value in values:
            self.fixed(value, HASH_BYTES)
        return self

    def raw(self, value: bytes) -> Writer:
        self._parts.append(value)
        return self

    def getvalue(self) -> bytes:
        return b"".join(self._parts)
