"""The configuration of one node process, shared by the PoP validator and the PoW node."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from popbench import crypto
from popbench.genesis import Genesis
from popbench.kinds import ConsensusKind
from popbench.net.peers import Address
from popbench.wire import Role

Reporter = Callable[[str, dict[str, Any]], None]


@dataclass
class NodeConfig:
    """Everything one node needs to start; the harness and ``popbench node`` both build one."""

    node_id: int
    genesis: Genesis
    key: crypto.SigningKey
    data_dir: Path
    listen: Address = ("127.0.0.1", 0)
    listen_socket: socket.socket | None = None
    dial: list[tuple[int | None, Address]] = field(default_factory=list)  # (node id if known, address)
    discover: bool = False  # learn every validator's address by peer exchange and link to all
    role: Role = Role.VALIDATOR
    byzantine: str | None = None
    region_of: dict[int, str] = field(default_factory=dict)
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    expected_links: int | None = None  # report "connected" once this many links are up
    # PoP on a bounded mesh (docs/protocol.md section 15): the node's mesh neighbours, which its floods
    # and item gossip travel over; None is the full mesh (every validator linked to every other)
    mesh: frozenset[int] | None = None
    address_book: dict[int, Address] = field(default_factory=dict)  # validators' addresses, for on-demand links
    mesh_graph: dict[int, frozenset[int]] = field(default_factory=dict)  # every node's neighbours, for ROUTED hops
    consensus: ConsensusKind = ConsensusKind.PBFT  # the PoP validator (popbench.pop.node) or PowNode
    mine: bool = True  # PoW only: whether this node mines

    def delay_to(self, peer_id: int) -> float:
        """Seconds to hold frames to ``peer_id``: the one-way latency between the two nodes' regions
        (application-level WAN emulation; 0 without regions)."""
        mine, theirs = self.region_of.get(self.node_id), self.region_of.get(peer_id)
        if mine is None or theirs is None:
            return 0.0
        return self.latency_ms.get(mine, {}).get(theirs, 0.0) / 1000
