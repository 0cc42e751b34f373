"""The STATUS contract: what a node reports about itself, one typed shape per node kind.

A STATUS frame still carries a JSON object (docs/protocol.md, "STATUS"); these types say exactly which
fields it holds. Both kinds share :class:`NodeStatus`'s fields; ``consensus`` names the kind and is the
tag one decoder dispatches on: ``"pbft"`` gives a :class:`PopStatus`, ``"pow"`` a :class:`PowStatus`
(which adds the ``pow`` section). Nodes build them (popbench/pop/status.py, popbench/pow/status.py);
:func:`decode_status` turns the JSON object back into one, so every reader uses attributes.

msgspec Structs rather than dataclasses: a tagged union decodes and validates in one call, unknown
fields from a newer node are ignored, and a missing or mistyped field is refused with its path.
"""

from __future__ import annotations

from typing import Any, TypedDict, cast

import msgspec

from popbench.errors import ProtocolError


class Summary(msgspec.Struct, frozen=True):
    """count, sum and max of a series (round times, block intervals): enough to merge nodes exactly."""

    count: int = 0
    sum: float = 0.0
    max: float = 0.0


class SeriesTally:
    """A :class:`Summary` kept as values arrive, in constant memory: a node adds a round time a block,
    so keeping the values themselves grew its heap with the chain (issue 18's soak found it)."""

    __slots__ = ("count", "sum", "max")

    def __init__(self) -> None:
        self.count = 0
        self.sum = 0.0
        self.max = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        self.sum += value
        self.max = value if self.count == 1 else max(self.max, value)

    def summary(self) -> Summary:
        return Summary(self.count, self.sum, self.max)


class CounterTotals(msgspec.Struct, frozen=True, kw_only=True):
    """The node's exact counters (popbench.counters.NodeCounters), by message type or reason where keyed."""

    frames_in: dict[str, int] = msgspec.field(default_factory=dict)
    bytes_in: dict[str, int] = msgspec.field(default_factory=dict)
    frames_out: dict[str, int] = msgspec.field(default_factory=dict)
    bytes_out: dict[str, int] = msgspec.field(default_factory=dict)
    signature_verifications: int = 0
    items_admitted: dict[str, int] = msgspec.field(default_factory=dict)
    items_rejected: dict[str, int] = msgspec.field(default_factory=dict)
    view_changes: int = 0
    protocol_errors: int = 0
    handshake_failures: dict[str, int] = msgspec.field(default_factory=dict)
    disconnects_received: dict[str, int] = msgspec.field(default_factory=dict)
    blocks_committed: int = 0
    proofs_committed: int = 0
    transfers_committed: int = 0
    hashes: int = 0
    equivocations_seen: int = 0
    relay_duplicates: int = 0
    routed_dropped: int = 0


class NodeStatus(msgspec.Struct, frozen=True, kw_only=True, tag_field="consensus"):
    """The fields every node kind reports (the base of the tagged union; never sent by itself)."""

    node_id: int
    role: str  # "validator" | "follower" (popbench.wire.Role, lower case)
    pid: int
    uptime_s: float
    height: int  # PoP: committed height; PoW: the tip's height
    head_hash: str  # hex
    view: int  # PoW: always 0
    leader: int  # PoW: always -1 (no leaders in proof of work)
    peers: int  # validator and follower links
    peer_ids: list[int]
    clients: int
    mempool: int
    crypto_backend: str
    round_time_s: Summary  # PoP: commit rounds; PoW: intervals between confirmed blocks
    last_commit_ns: int  # wall clock of the last commit (PoW: confirmation); 0 before any
    proposals_refused: dict[str, int]  # PoP: refused proposals; PoW: refused blocks; by reason
    blocks_fetched: int
    sync_failures: int  # PoW: always 0
    counters: CounterTotals
    unexpected_exceptions: int = 0  # exceptions that reached the node's event loop (popbench.loop_exceptions)


class PopStatus(NodeStatus, frozen=True, kw_only=True, tag="pbft"):
    """STATUS of a PoP (PBFT) validator or follower."""


class PowSection(msgspec.Struct, frozen=True, kw_only=True):
    """The ``pow`` section of a PoW node's STATUS (docs/pow.md)."""

    tip_hash: str
    height: int
    total_work_hex: str  # exact; may pass 64 bits, which JSON numbers do not hold
    total_work_log2: int
    work_bits: int
    next_work_bits: int
    mining: bool
    blocks_mined: int
    hashes: int
    mining_s: float
    hash_rate: float
    known_blocks: int
    stale_blocks: int
    orphans: int
    reorgs: int
    deepest_reorg: int
    mempool: int
    returned_to_mempool: int
    confirmations: int
    confirmed_height: int
    chain_requests: int

    @property
    def total_work(self) -> int:
        return int(self.total_work_hex, 16)


class PowStatus(NodeStatus, frozen=True, kw_only=True, tag="pow"):
    """STATUS of a PoW (Antimony) node: the shared fields plus the ``pow`` section."""

    pow: PowSection


AnyStatus = PopStatus | PowStatus


class SharedStatusFields(TypedDict):
    """What NodeBase fills for either kind (popbench.node_base.NodeBase.shared_status_fields)."""

    node_id: int
    role: str
    pid: int
    uptime_s: float
    peers: int
    peer_ids: list[int]
    clients: int
    crypto_backend: str
    last_commit_ns: int
    counters: CounterTotals
    unexpected_exceptions: int


def status_to_json_object(status: AnyStatus) -> dict[str, Any]:
    """The JSON object a STATUS frame carries (tag ``consensus`` included)."""
    return cast(dict[str, Any], msgspec.to_builtins(status))  # a Struct always gives a dict


def decode_status(payload: object) -> AnyStatus:
    """A STATUS JSON object (from the wire or a child's report) as its typed status; ProtocolError if malformed."""
    try:
        return cast(AnyStatus, msgspec.convert(payload, AnyStatus))  # a union type: msgspec's stubs say Any
    except msgspec.ValidationError as err:
        raise ProtocolError(f"malformed STATUS: {err}") from err
