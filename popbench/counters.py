"""Exact work counters of one node: what crossed the wire, what was verified, admitted, refused.

They are noise-free (counts, not timings), so CI can compare them between commits without statistics.
"""

from __future__ import annotations

from collections import Counter
from typing import Any


class NodeCounters:
    """Counters a node reports in its STATUS; names are the keys of ``as_dict``."""

    __slots__ = (
        "frames_in", "bytes_in", "frames_out", "bytes_out", "signature_verifications",
        "items_admitted", "items_rejected", "view_changes", "protocol_errors",
        "handshake_failures", "disconnects_received", "blocks_committed", "proofs_committed",
        "transfers_committed", "hashes", "equivocations_seen", "relay_duplicates",
        "routed_dropped",
    )  # fmt: skip

    def __init__(self) -> None:
        self.frames_in: Counter[str] = Counter()
        self.bytes_in: Counter[str] = Counter()
        self.frames_out: Counter[str] = Counter()
        self.bytes_out: Counter[str] = Counter()
        self.signature_verifications = 0
        self.items_admitted: Counter[str] = Counter()
        self.items_rejected: Counter[str] = Counter()
        self.view_changes = 0
        self.protocol_errors = 0
        self.handshake_failures: Counter[str] = Counter()
        self.disconnects_received: Counter[str] = Counter()
        self.blocks_committed = 0
        self.proofs_committed = 0
        self.transfers_committed = 0
        self.hashes = 0
        self.equivocations_seen = 0
        self.relay_duplicates = 0  # RELAYED envelopes that arrived again over another mesh link (popbench/pop/mesh.py)
        self.routed_dropped = 0  # ROUTED envelopes this node could not pass on: no link up to the next hop (popbench/pop/routing.py)

    def as_dict(self) -> dict[str, Any]:
        return {name: _plain(getattr(self, name)) for name in self.__slots__}


def _plain(value: object) -> object:
    return dict(value) if isinstance(value, Counter) else value
