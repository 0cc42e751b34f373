"""Build the node a configuration asks for: the PoP (PBFT) validator or the PoW (Antimony) node."""

from __future__ import annotations

from popbench.errors import ConfigError
from popbench.kinds import ConsensusKind, values
from popbench.node_config import NodeConfig, Reporter
from popbench.pop.node import Node
from popbench.pow.node import PowNode

AnyNode = Node | PowNode


def make_node(config: NodeConfig, report: Reporter | None = None) -> AnyNode:
    if config.consensus == ConsensusKind.PBFT:
        return Node(config, report)
    if config.consensus == ConsensusKind.POW:
        return PowNode(config, report)
    raise ConfigError(f"unknown consensus {config.consensus!r} (known: {', '.join(values(ConsensusKind))})", key="consensus")
