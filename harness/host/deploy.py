"""The deployment of one run: its genesis, each node's socket, dial list, region and config.

Built in the supervisor before anything is forked. Every listening socket is bound here (port 0, the
kernel picks), so ports cannot race between nodes, and a restarted node gets its very same socket back.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.host.topology import Topology, assign_regions, build
from harness.profile import Profile
from popbench import crypto
from popbench.genesis import VOTE_PATHS, ChainParams, Genesis, make_genesis, write_genesis, write_keys
from popbench.net.peers import bind_listener
from popbench.node_config import NodeConfig
from popbench.wire import Role

LOOPBACK = "127.0.0.1"


@dataclass
class Deployment:
    """What the run deploys: genesis, keys, topology, regions and one bound socket per node."""

    profile: Profile
    genesis: Genesis
    keys: list[crypto.SigningKey]
    topology: Topology
    regions: dict[int, str]
    sockets: list[socket.socket]
    data_dir: Path

    @property
    def count(self) -> int:
        return len(self.sockets)

    def address(self, node_id: int) -> tuple[str, int]:
        host, port = self.sockets[node_id].getsockname()[:2]
        return host, port

    def addresses(self) -> list[tuple[str, int]]:
        return [self.address(node_id) for node_id in range(self.count)]

    def node_config(self, node_id: int) -> NodeConfig:
        net = self.profile.network
        config = NodeConfig(
            node_id=node_id, genesis=self.genesis, key=self.keys[node_id], data_dir=self.data_dir,
            listen_socket=self.sockets[node_id],
            dial=[(peer, self.address(peer)) for peer in self.topology.dial[node_id]],
            discover=self.topology.discover, role=Role.VALIDATOR, byzantine=self._byzantine(node_id),
            region_of=self.regions, latency_ms=net.latency_ms,
            expected_links=self.topology.expected_links(node_id), consensus=net.consensus,
            mine=self._mines(node_id),
        )  # fmt: skip
        return config

    def _mines(self, node_id: int) -> bool:
        """PoW: the profile's mining nodes (all when it names none); PoP nodes never mine blocks."""
        chosen = self.profile.miners.mining_nodes
        return self.profile.network.consensus == "pow" and (not chosen or node_id in chosen)

    def _byzantine(self, node_id: int) -> str | None:
        for fault in self.profile.faults:
            if fault.kind == "byzantine" and fault.node == node_id:
                return fault.behaviour
        return None

    def describe(self) -> dict[str, Any]:
        net = self.profile.network
        return {
            "consensus": net.consensus, "nodes": self.count, "topology": self.topology.kind,
            "intended_links": len(self.topology.intended), "discover_by_peer_exchange": self.topology.discover,
            "regions": sorted(set(self.regions.values())), "chain_id": self.genesis.chain_id.hex(),
            "quorum": self.genesis.quorum, "f": self.genesis.f, "crypto_backend": crypto.backend_name(),
            "votes": self.genesis.params.vote_path,  # which vote path ran (docs/consensus.md)
        }  # fmt: skip

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def chain_params(profile: Profile) -> ChainParams:
    c, m = profile.consensus, profile.miners
    return ChainParams(
        batch_size=c.batch_size, batch_interval_ms=c.batch_interval_ms, view_timeout_ms=c.view_timeout_ms,
        view_timeout_max_ms=c.view_timeout_max_ms, min_work_bits=c.min_work_bits,
        pow_block_interval_ms=m.block_interval_ms, pow_retarget_blocks=m.retarget_blocks,
        pow_initial_work_bits=m.initial_work_bits, votes=VOTE_PATHS[profile.network.votes],
    )  # fmt: skip


def deploy(profile: Profile, run_dir: Path) -> Deployment:
    """Genesis (written beside the report), topology, regions and bound sockets for ``profile``."""
    net = profile.network
    genesis, keys = make_genesis(net.nodes, seed=f"popbench-{profile.run.seed}", params=chain_params(profile),
                                 chain_name=f"popbench-{profile.name}")  # fmt: skip
    write_genesis(genesis, run_dir / "genesis.json")
    write_keys(keys, run_dir / "genesis.keys.json")
    topology = build(net.topology, net.nodes, net.consensus, net.degree, net.bootstrap_nodes, profile.run.seed)
    sockets = [bind_listener((LOOPBACK, 0)) for _ in range(net.nodes)]
    regions = assign_regions(net.nodes, net.regions)
    return Deployment(profile, genesis, keys, topology, regions, sockets, run_dir / "data")
