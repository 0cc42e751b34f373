"""Raw per-proof records of a run, kept compactly beside the report (``records-<driver>.bin``).

File format (version 1): the 8-byte magic ``PBREC001``, then one fixed 74-byte big-endian record per
proof (layout ``RECORD``): index u32, proof id 32 bytes, expected outcome u8 (0 commit, 1 bad signature,
2 low work, 3 replay), due_ns u64 (scheduled send time), sent_ns u64, answer_ns u64 (SUBMIT_RESULT
seen), reason u8 (RejectReason; 255: no answer), commit_ns u64 (COMMITTED seen; 0: never), height u32.
All times are wall-clock nanoseconds on this host (every process shares the clock).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from popbench.errors import HarnessError

MAGIC = b"PBREC001"
RECORD = struct.Struct(">I32sBQQQBQI")
NO_ANSWER = 255


@dataclass(slots=True)
class ProofRecord:
    index: int
    proof_id: bytes
    expect: int
    due_ns: int
    sent_ns: int = 0
    answer_ns: int = 0
    reason: int = NO_ANSWER
    commit_ns: int = 0
    height: int = 0

    def pack(self) -> bytes:
        return RECORD.pack(self.index, self.proof_id, self.expect, self.due_ns, self.sent_ns,
                           self.answer_ns, self.reason, self.commit_ns, self.height)  # fmt: skip


def write_records(path: Path, records: list[ProofRecord]) -> None:
    path.write_bytes(MAGIC + b"".join(record.pack() for record in records))


def read_records(path: Path) -> Iterator[ProofRecord]:
    data = path.read_bytes()
    if not data.startswith(MAGIC) or (len(data) - len(MAGIC)) % RECORD.size:
        raise HarnessError(f"{path} is not a popbench records file (version 1)")
    for fields in RECORD.iter_unpack(memoryview(data)[len(MAGIC) :]):
        yield ProofRecord(*fields)
