"""What the monitor watches: a run's nodes from its directory, or nodes started by hand from addresses.

A run directory holds ``nodes.json`` (addresses, chain id, consensus), ``pids.json`` (the supervisor
rewrites it at every fork) and ``genesis.json`` (validators, hence f and the leaderboard's addresses). A
repeat set's directory is watched through its newest ``run-K``.

Addresses: each given node is asked for its STATUS (its id, kind and pid) and its PEERS (the validators
it knows), and every validator learned that way is asked in turn, so one address finds a whole mesh.
Pids are used (CPU, memory, "process gone") only for nodes on a loopback address, the ones on this host.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from harness.host.nodes_file import NODES_FILE, read_nodes_file
from popbench.client import NodeClient
from popbench.errors import ClientError, ConfigError, ProtocolError
from popbench.genesis import Genesis, load_genesis
from popbench.wire import Peers, PeersRequest, Role
from popbench.wire.status import AnyStatus, PowStatus

Address = tuple[str, int]
DISCOVERY_TIMEOUT_S = 3.0  # per node: a dead address must not hold up finding the live ones
DISCOVERY_ROUNDS = 3


@dataclass
class Target:
    """The nodes to watch and what is known about them."""

    label: str  # what the dashboard's title names
    nodes: dict[int, Address]
    pids: dict[int, int] = field(default_factory=dict)  # only nodes on this host
    chain_id: bytes | None = None
    consensus: str = "pbft"
    genesis: Genesis | None = None
    run_dir: Path | None = None
    interval_s: float | None = None  # the run's own sampling interval, when known
    links: dict[int, int] = field(default_factory=dict)  # validator links each node is meant to have

    @property
    def f(self) -> int | None:
        """The fault threshold: from the genesis, else from the validators found ((n - 1) // 3)."""
        if self.consensus != "pbft":
            return None
        n = self.genesis.n if self.genesis is not None else len(self.nodes)
        return (n - 1) // 3

    def refresh_pids(self) -> dict[int, int]:
        """A run's pids as ``pids.json`` says now (a restarted node has a new one); the nodes whose pid changed."""
        if self.run_dir is None:
            return {}
        changed = {}
        for node_id, pid in read_pids(self.run_dir).items():
            if node_id in self.nodes and self.pids.get(node_id) != pid:
                self.pids[node_id] = changed[node_id] = pid
        return changed


def newest_run_dir(path: Path) -> Path:
    """``path`` itself when it holds a run; else its newest ``run-K`` that does (a repeat set)."""
    if (path / NODES_FILE).exists():
        return path
    runs = sorted((p for p in path.glob("run-*") if (p / NODES_FILE).exists()), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise ConfigError(f"no {NODES_FILE} in {path}: not a run directory, or the run has not deployed yet", source=str(path))
    return runs[-1]


def from_run_dir(path: Path) -> Target:
    run_dir = newest_run_dir(path)
    nodes_file = read_nodes_file(run_dir)
    genesis_path = run_dir / "genesis.json"
    genesis = load_genesis(genesis_path) if genesis_path.exists() else None
    return Target(label=str(run_dir), nodes={n.node_id: (n.host, n.port) for n in nodes_file.nodes}, pids=read_pids(run_dir),
                  chain_id=bytes.fromhex(nodes_file.chain_id), consensus=nodes_file.consensus, genesis=genesis, run_dir=run_dir,
                  interval_s=nodes_file.status_interval_s,
                  links={n.node_id: n.links for n in nodes_file.nodes if n.links >= 0})  # fmt: skip


def read_pids(run_dir: Path) -> dict[int, int]:
    """``{"node-3": 4242, "driver-0": ...}`` as node id -> pid (nodes only); empty while not written yet."""
    try:
        named = orjson.loads((run_dir / "pids.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return {int(name.removeprefix("node-")): int(pid) for name, pid in named.items() if name.startswith("node-")}


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host) if host == "localhost" else host).is_loopback
    except ValueError:
        return False


async def from_addresses(addresses: list[Address], genesis: Genesis | None) -> Target:
    """Ask each address, then every validator they name, for STATUS and PEERS (a few rounds at most)."""
    found: dict[int, tuple[Address, AnyStatus]] = {}
    asked: set[Address] = set()
    pending = list(dict.fromkeys(addresses))
    for _ in range(DISCOVERY_ROUNDS):
        if not pending:
            break
        asked.update(pending)
        answers = await asyncio.gather(*(_ask(address) for address in pending))
        learned: list[Address] = []
        for address, answer in zip(pending, answers, strict=True):
            if answer is not None:
                status, peers = answer
                found.setdefault(status.node_id, (address, status))
                learned += peers
        pending = [a for a in dict.fromkeys(learned) if a not in asked and not any(a == seen for seen, _ in found.values())]
    if not found:
        raise ConfigError(f"no node answers at {', '.join(f'{h}:{p}' for h, p in addresses)}")
    statuses = [status for _, status in found.values()]
    return Target(
        label=", ".join(f"{h}:{p}" for h, p in addresses) + (f" (+{len(found) - len(addresses)} found by PEERS)" if len(found) > len(addresses) else ""),
        nodes={node_id: address for node_id, (address, _) in sorted(found.items())},
        pids={node_id: status.pid for node_id, (address, status) in found.items() if is_loopback(address[0])},
        chain_id=genesis.chain_id if genesis is not None else None,
        consensus="pow" if any(isinstance(s, PowStatus) for s in statuses) else "pbft",
        genesis=genesis,
        links=dict.fromkeys(found, len(found) - 1),  # nodes started by hand: a full mesh of the validators found
    )  # fmt: skip


async def _ask(address: Address) -> tuple[AnyStatus, list[Address]] | None:
    """The node's STATUS and the validator addresses its PEERS lists; None when it does not answer."""
    try:
        client = await NodeClient.connect(*address, timeout_s=DISCOVERY_TIMEOUT_S)
    except ClientError:
        return None
    try:
        status = await client.status(DISCOVERY_TIMEOUT_S)
        return status, await _peers(client)
    except (ClientError, ProtocolError):
        return None
    finally:
        client.close()


async def _peers(client: NodeClient) -> list[Address]:
    """The validators' listen addresses a node knows (itself first); none when it does not say."""
    try:
        answer = await client.request(PeersRequest(), DISCOVERY_TIMEOUT_S)
    except ClientError:
        return []
    assert isinstance(answer, Peers)
    return [(socket.inet_ntoa(p.host), p.port) for p in answer.peers if p.role == Role.VALIDATOR]
