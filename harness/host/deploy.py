"""The deployment of one run: its genesis, each node's socket, dial list, region and config.

Built in the supervisor before anything is forked. Every listening socket is bound here (port 0, the
kernel picks), so ports cannot race between nodes, and a restarted node gets its very same socket back.

Addresses (``network.loopback``): ``shared`` puts every node on 127.0.0.1; ``per-node`` gives node i its
own loopback address, 127.0.(1 + i // 250).(1 + i % 250), so the kernel can tell node pairs apart
(iptables and tc rules on source and destination, harness/faults/kernel.py; docs/faults.md).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.host.topology import Topology, assign_regions, build
from harness.kinds import LeaderRotation
from harness.profile import Profile
from popbench import crypto
from popbench.errors import ConfigError, HarnessError
from popbench.genesis import VOTE_PATHS, VOTES_COLLECTOR, ChainParams, Genesis, make_genesis, write_genesis, write_keys
from popbench.net.peers import bind_listener
from popbench.node_config import NodeConfig
from popbench.wire import Role

LOOPBACK = "127.0.0.1"
SHARED, PER_NODE = "shared", "per-node"  # the values of network.loopback
LOOPBACK_MODES = (SHARED, PER_NODE)
HOSTS_PER_OCTET = 250  # last octet 1..250 of 127.0.x.y; x runs from 1, so 127.0.0.1 stays the shared address
MAX_PER_NODE = 254 * HOSTS_PER_OCTET  # x up to 254: 127.0.255.0/24 is left alone


def node_host(node_id: int) -> str:
    """Node ``node_id``'s own loopback address under ``per-node``: 127.0.(1 + i // 250).(1 + i % 250).

    All of 127.0.0.0/8 routes to ``lo`` on Linux, so binding one needs no configuration."""
    if not 0 <= node_id < MAX_PER_NODE:
        raise ConfigError(f"{node_id + 1} nodes do not fit the per-node loopback plan (at most {MAX_PER_NODE})",
                          key="network.loopback")  # fmt: skip
    return f"127.0.{1 + node_id // HOSTS_PER_OCTET}.{1 + node_id % HOSTS_PER_OCTET}"


def loopback_mode(profile: Profile, override: str | None = None) -> str:
    """``override``, else the profile's ``network.loopback`` (``shared`` where the profile has no such key)."""
    mode = str(getattr(profile.network, "loopback", SHARED)) if override is None else override
    if mode not in LOOPBACK_MODES:
        raise ConfigError(f"{mode!r} is not one of {', '.join(LOOPBACK_MODES)}", key="network.loopback")
    return mode


def node_hosts(nodes: int, mode: str) -> list[str]:
    """The address each node listens on, and dials from, under ``mode``."""
    if mode == PER_NODE:
        return [node_host(node_id) for node_id in range(nodes)]
    return [LOOPBACK] * nodes


def bind_node_sockets(hosts: list[str]) -> list[socket.socket]:
    """One listening socket per node on its host (port 0: the kernel picks); all or none."""
    sockets: list[socket.socket] = []
    try:
        for host in hosts:
            sockets.append(bind_listener((host, 0)))  # noqa: PERF401 (each bound one must be closed on failure)
    except OSError as err:
        for sock in sockets:
            sock.close()
        # 127.0.x.y other than 127.0.0.1 binds only where all of 127/8 is local (Linux, not macOS)
        raise HarnessError(f"cannot listen on {hosts[len(sockets)]} for node {len(sockets)}: {err}") from None
    return sockets


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
    loopback: str = field(default=SHARED, kw_only=True)  # network.loopback: shared or per-node
    _book: dict[int, tuple[str, int]] | None = field(default=None, init=False, repr=False)
    _graph: dict[int, frozenset[int]] | None = field(default=None, init=False, repr=False)

    @property
    def count(self) -> int:
        return len(self.sockets)

    def address(self, node_id: int) -> tuple[str, int]:
        host, port = self.sockets[node_id].getsockname()[:2]
        return host, port

    def addresses(self) -> list[tuple[str, int]]:
        return [self.address(node_id) for node_id in range(self.count)]

    def hosts(self) -> dict[int, str]:
        """Each node's IP address (what kernel fault rules match on), by node id."""
        return {node_id: self.address(node_id)[0] for node_id in range(self.count)}

    def listen_socket(self, node_id: int) -> socket.socket:
        """The socket ``node_id`` listens on (a multi-host deployment binds only its own nodes')."""
        return self.sockets[node_id]

    def node_config(self, node_id: int) -> NodeConfig:
        net = self.profile.network
        config = NodeConfig(
            node_id=node_id, genesis=self.genesis, key=self.keys[node_id], data_dir=self.data_dir,
            listen=self.address(node_id),  # its host is also the source of the node's own dials
            listen_socket=self.listen_socket(node_id),
            dial=[(peer, self.address(peer)) for peer in self.topology.dial[node_id]],
            discover=self.topology.discover, role=Role.VALIDATOR, byzantine=self._byzantine(node_id),
            region_of=self.regions, latency_ms=net.latency_ms,
            expected_links=self.topology.expected_links(node_id), consensus=net.consensus,
            mine=self._mines(node_id),
        )  # fmt: skip
        if self.bounded_mesh:
            config.mesh = self.topology.neighbours(node_id)
            config.address_book = self._address_book()
            config.mesh_graph = self._mesh_graph()
        return config

    @property
    def bounded_mesh(self) -> bool:
        """PBFT over a k-regular graph: floods over the mesh, direct links on demand (docs/protocol.md 15)."""
        return self.profile.network.consensus == "pbft" and self.topology.kind == "k-regular"

    def _mesh_graph(self) -> dict[int, frozenset[int]]:
        if self._graph is None:
            self._graph = self.topology.graph()  # one dict for every node's config (forked: shared pages)
        return self._graph

    def _address_book(self) -> dict[int, tuple[str, int]]:
        if self._book is None:
            self._book = dict(enumerate(self.addresses()))
        return self._book

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
        leader_reputation=int(c.leader_rotation == LeaderRotation.REPUTATION),
        collector_timeout_ms=c.collector_timeout_ms,
    )  # fmt: skip


@dataclass(frozen=True)
class NetworkPlan:
    """What every process of a run derives alike from the profile: genesis, keys, topology, regions.

    Deterministic (seeded), so the host supervisors of a multi-host run and its coordinator compute the
    same chain and the same dial lists without exchanging them (harness/multihost)."""

    genesis: Genesis
    keys: list[crypto.SigningKey]
    topology: Topology
    regions: dict[int, str]


def network_plan(profile: Profile) -> NetworkPlan:
    net = profile.network
    genesis, keys = make_genesis(net.nodes, seed=f"popbench-{profile.run.seed}", params=chain_params(profile),
                                 chain_name=f"popbench-{profile.name}")  # fmt: skip
    topology = build(net.topology, net.nodes, net.consensus, net.degree, net.bootstrap_nodes, profile.run.seed)
    # derived once here, so every forked node shares them instead of deriving them itself: the leader
    # schedule is n^2 work (1.9 s a node under cProfile at n = 1000, every node at its start), and each node
    # decoding the validators' BLS keys at its first certificate cost 64 ms, 64 CPU-s across the network at once
    _ = genesis.leader_schedule
    if genesis.params.votes == VOTES_COLLECTOR:
        _ = genesis.bls_keys
    return NetworkPlan(genesis, keys, topology, assign_regions(net.nodes, net.regions))


def write_network(plan: NetworkPlan, run_dir: Path) -> None:
    """The genesis and its keys beside the report."""
    write_genesis(plan.genesis, run_dir / "genesis.json")
    write_keys(plan.keys, run_dir / "genesis.keys.json")


def deploy(profile: Profile, run_dir: Path, loopback: str | None = None) -> Deployment:
    """Genesis (written beside the report), topology, regions and bound sockets for ``profile``.

    ``loopback`` (``shared`` or ``per-node``) overrides the profile's ``network.loopback``."""
    mode = loopback_mode(profile, loopback)
    hosts = node_hosts(profile.network.nodes, mode)  # checked before anything is written
    plan = network_plan(profile)
    write_network(plan, run_dir)
    sockets = bind_node_sockets(hosts)
    return Deployment(profile, plan.genesis, plan.keys, plan.topology, plan.regions, sockets, run_dir / "data",
                      loopback=mode)  # fmt: skip
