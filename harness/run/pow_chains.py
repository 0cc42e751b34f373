"""Reading proof-of-work chains back from the nodes' databases after a run.

Each node stores every block it accepted (``pow_blocks``) and when it first saw each (``pow_arrivals``).
From those, the harness rebuilds each node's main chain (the most cumulative work) and the timeline of
every block across the network, without trusting anything the nodes summarise about themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from popbench.errors import ProtocolError, StorageError
from popbench.pow.block import PowBlock
from popbench.store import Store, node_database

NodeId = int


@dataclass
class StoredChain:
    """One node's block tree as stored: hash -> (prev hash, height, total work, block)."""

    blocks: dict[bytes, tuple[bytes, int, int, PowBlock]] = field(default_factory=dict)
    arrivals: dict[bytes, int] = field(default_factory=dict)  # hash -> first seen (ns)

    def tip(self) -> bytes | None:
        if not self.blocks:
            return None
        return max(self.blocks, key=lambda h: (self.blocks[h][2], -self.arrivals.get(h, 0)))

    def main_chain(self) -> list[bytes]:
        """Hashes from the first stored block up to the tip, by following parents."""
        chain, cursor = [], self.tip()
        while cursor is not None and cursor in self.blocks:
            chain.append(cursor)
            cursor = self.blocks[cursor][0]
        return chain[::-1]


def read_chain(path: Path) -> StoredChain:
    chain = StoredChain()
    with Store(path) as store:
        for block_hash, prev_hash, height, total_work, encoded in store.load_pow_blocks():
            chain.blocks[block_hash] = (prev_hash, height, total_work, PowBlock.decode(encoded))
        for block_hash, _height, _miner, seen_ns in store.load_pow_arrivals():
            chain.arrivals[block_hash] = seen_ns
    return chain


def read_chains(data_dir: Path, nodes: int) -> dict[NodeId, StoredChain]:
    """Every node's chain that can be read; a missing or unreadable database is left out, and the safety
    check (harness/run/safety.py) reports it as a failure."""
    chains = {}
    for node_id in range(nodes):
        path = node_database(data_dir, node_id)
        if not path.exists():
            continue
        try:
            chains[node_id] = read_chain(path)
        except (StorageError, ProtocolError):
            continue
    return chains


def heaviest_main_chain(chains: dict[NodeId, StoredChain]) -> list[bytes]:
    """The network's main chain: the one with the most work among every node's main chain."""
    best: list[bytes] = []
    best_work = -1
    for chain in chains.values():
        main = chain.main_chain()
        work = chain.blocks[main[-1]][2] if main else -1
        if work > best_work:
            best, best_work = main, work
    return best
