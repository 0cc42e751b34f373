"""``nodes.json`` in a run directory: where the run's nodes listen, so ``popbench monitor RUN_DIR`` can
attach to a run while it goes (docs/monitoring.md).

Written once the sockets are bound, before any node is forked; the pids are in ``pids.json`` (written
by the supervisor at every fork, so a restarted node's new pid is there too) and the validators in
``genesis.json``, both beside it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import msgspec

from harness.host.deploy import Deployment
from popbench.errors import ConfigError

NODES_FILE = "nodes.json"


class NodeAddress(msgspec.Struct, frozen=True):
    node_id: int
    host: str
    port: int
    links: int = -1  # validator links the topology intends it to have (-1: not known)


class NodesFile(msgspec.Struct, frozen=True, kw_only=True):
    """What a watcher needs to reach a run's nodes."""

    version: int = 1
    consensus: str  # "pbft" | "pow"
    chain_id: str  # hex
    status_interval_s: float  # the run's sampling interval (the monitor's default)
    nodes: list[NodeAddress]


def write_nodes_file(deployment: Deployment, run_dir: Path) -> Path:
    degree = Counter(node for edge in deployment.topology.intended for node in edge)  # one pass: 1000 nodes have 499,500 edges
    nodes = [NodeAddress(node_id, host, port, degree[node_id]) for node_id, (host, port) in enumerate(deployment.addresses())]
    content = NodesFile(consensus=str(deployment.profile.network.consensus), chain_id=deployment.genesis.chain_id.hex(),
                        status_interval_s=deployment.profile.run.status_interval_s, nodes=nodes)  # fmt: skip
    path = run_dir / NODES_FILE
    partial = path.with_suffix(".tmp")
    partial.write_bytes(msgspec.json.encode(content))
    partial.replace(path)  # a watcher never reads half a file
    return path


def read_nodes_file(run_dir: Path) -> NodesFile:
    path = run_dir / NODES_FILE
    try:
        return msgspec.json.decode(path.read_bytes(), type=NodesFile)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as err:
        raise ConfigError(f"cannot read the run's node addresses: {err}", source=str(path)) from err
