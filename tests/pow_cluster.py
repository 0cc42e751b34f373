"""A local network of real ``popbench node --consensus pow`` processes, with a chosen link topology.

Extends :class:`tests.cluster.LocalCluster`: the same sockets bound up front, the same STATUS polling,
plus which peers each node dials (so a test can split the network in halves and join them later), which
nodes mine, and readers for the chains and arrival times the nodes stored.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from popbench.genesis import ChainParams
from popbench.pow.block import PowBlock
from popbench.store import Store
from popbench.wire.status import AnyStatus, PowSection, PowStatus
from tests.cluster import POPBENCH, LocalCluster, Statuses, node_db

__all__ = ["PowCluster", "Statuses", "ancestry", "pow_section", "same_tip", "tip_of", "total_work"]


class PowCluster(LocalCluster):
    """N PoW nodes on loopback; by default each dials every lower id and every node mines."""

    def __init__(self, root: Path, n: int, params: ChainParams, dials: dict[int, list[int]] | None = None,
                 miners: set[int] | None = None) -> None:  # fmt: skip
        super().__init__(root, n, params)
        self.dials = dials if dials is not None else {node: list(range(node)) for node in range(n)}
        self.miners = set(range(n)) if miners is None else miners

    def _spawn(self, node: int) -> subprocess.Popen[bytes]:
        sock = self.sockets[node]
        args = [POPBENCH, "node", "--consensus", "pow", "--genesis", str(self.genesis_path), "--node-id", str(node),
                "--data-dir", str(self.root / f"node-{node}"), "--listen-fd", str(sock.fileno())]  # fmt: skip
        for peer in self.dials.get(node, []):
            args += ["--peer", f"127.0.0.1:{self.ports[peer]}"]
        if node not in self.miners:
            args.append("--no-mine")
        log = open(self.root / f"node-{node}.log", "ab")  # noqa: SIM115 (the process owns it)
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, pass_fds=(sock.fileno(),))

    def stored_chain(self, node: int) -> dict[bytes, PowBlock]:
        """Every block a node persisted, by hash (read after the node stopped)."""
        with Store(node_db(self.root, node)) as store:
            return {row[0]: PowBlock.decode(row[4]) for row in store.load_pow_blocks()}

    def stored_heaviest_tip(self, node: int) -> bytes:
        with Store(node_db(self.root, node)) as store:
            rows = store.load_pow_blocks()
        return max(rows, key=lambda row: row[3])[0]

    def arrivals(self, node: int) -> dict[bytes, int]:
        """Block hash -> when the node first saw it (ns)."""
        with Store(node_db(self.root, node)) as store:
            return {row[0]: row[3] for row in store.load_pow_arrivals()}


def ancestry(blocks: dict[bytes, PowBlock], tip: bytes) -> list[PowBlock]:
    """The chain that ends at ``tip``, genesis excluded, lowest first; fails if a link is missing."""
    chain: list[PowBlock] = []
    block = blocks.get(tip)
    while block is not None:
        assert block.hash == tip or block.hash == chain[-1].prev_hash
        chain.append(block)
        block = blocks.get(block.prev_hash)
    chain.reverse()
    assert chain and chain[0].height == 1, "the stored chain does not reach genesis"
    return chain


def pow_section(status: AnyStatus | None) -> PowSection | None:
    """A PoW node's ``pow`` section (None when the node did not answer)."""
    if status is None:
        return None
    assert isinstance(status, PowStatus), f"node {status.node_id} is not a PoW node"
    return status.pow


def total_work(status: AnyStatus | None) -> int:
    section = pow_section(status)
    return section.total_work if section else 0


def tip_of(status: AnyStatus | None) -> str | None:
    section = pow_section(status)
    return section.tip_hash if section else None


def same_tip(statuses: Statuses, min_height: int = 0) -> bool:
    tips = {tip_of(s) for s in statuses.values()}
    return None not in tips and len(tips) == 1 and all(s is not None and s.height >= min_height for s in statuses.values())
