"""The safety check: after the run, every node's chain is read from its own database, verified, and compared.

PBFT: every node's database must exist and be readable; every stored block must carry a valid commit
certificate (n - f COMMIT signatures over its hash from distinct genesis validators), link to the block
below it (``prev_hash``), and sit at the next height from genesis. Two nodes holding different blocks at
one height is a conflict. Nodes may stop at different heights (a crashed node stops early); each height
is compared among the nodes that hold it.

PoW: chains fork by design, so each node's main chain (most work) is compared at the heights it has
buried ``CONFIRMATIONS`` deep, among the nodes that have buried that height, however far another lags.

The run passes (``agree``) only when no node's chain is missing or fails verification and no two nodes
conflict. A failure fails the run whatever its score.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.run.accounting import Accounting
from harness.run.pow_chains import StoredChain, read_chain
from popbench.errors import ConsensusError, ProtocolError, StorageError
from popbench.genesis import Genesis
from popbench.model.block import AnyCertificate
from popbench.pop.ledger import GENESIS_HASH, CommittedBlock
from popbench.pow.block import genesis_block
from popbench.pow.rules import CONFIRMATIONS
from popbench.store import Store, node_database

MAX_CONFLICTS_LISTED = 10
BLOCKS_PER_READ = 256  # blocks read from a database at a time


@dataclass(frozen=True)
class Conflict:
    """Nodes that hold different blocks at one height."""

    height: int
    hashes: dict[str, list[int]]  # block hash (hex) -> the nodes that hold it


@dataclass(frozen=True)
class Unverified:
    """A node whose chain could not be read or failed verification, from ``height`` on (None: all of it)."""

    node: int
    height: int | None
    reason: str


@dataclass
class SafetyCheck:
    nodes_checked: int  # nodes whose database was read
    heights_checked: int  # heights compared across nodes
    agree: bool  # passed: every chain read and verified, no two nodes conflict
    conflicts: list[Conflict] = field(default_factory=list)  # the first MAX_CONFLICTS_LISTED
    heights: dict[int, int] = field(default_factory=dict)  # node id -> verified height (PoW: main-chain tip)
    unverified: list[Unverified] = field(default_factory=list)
    conflicts_total: int = 0
    accounting: Accounting | None = None  # PBFT: where every acknowledged item ended up (harness/run/accounting.py)

    @property
    def items_ok(self) -> bool:
        """No acknowledged item lost, none committed twice, none committed that nobody submitted."""
        return self.accounting is None or self.accounting.ok

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Census:
    """Which nodes hold which block at each compared height, and which nodes failed."""

    def __init__(self) -> None:
        self.by_height: dict[int, dict[bytes, list[int]]] = defaultdict(lambda: defaultdict(list))
        self.heights: dict[int, int] = {}
        self.unverified: list[Unverified] = []

    def add(self, node: int, height: int, block_hash: bytes) -> None:
        self.by_height[height][block_hash].append(node)

    def fail(self, node: int, height: int | None, reason: str) -> None:
        self.unverified.append(Unverified(node, height, reason))

    def verdict(self) -> SafetyCheck:
        conflicts = [Conflict(height, {h.hex(): nodes for h, nodes in hashes.items()})
                     for height, hashes in sorted(self.by_height.items()) if len(hashes) > 1]  # fmt: skip
        return SafetyCheck(
            nodes_checked=len(self.heights), heights_checked=len(self.by_height),
            agree=not conflicts and not self.unverified, conflicts=conflicts[:MAX_CONFLICTS_LISTED],
            heights=dict(sorted(self.heights.items())), unverified=self.unverified, conflicts_total=len(conflicts),
        )  # fmt: skip


# -- PBFT --------------------------------------------------------------------------------------------
def check_safety(data_dir: Path, nodes: int, genesis: Genesis) -> SafetyCheck:
    """PBFT: every node's stored chain is certified and linked, and no two nodes differ at a height."""
    census = _Census()
    certificates = _Certificates(genesis)
    for node in range(nodes):
        _read_pbft_node(node_database(data_dir, node), node, certificates, census)
    return census.verdict()


class _Certificates:
    """Verifies commit certificates against the genesis; a certificate several nodes hold is checked once."""

    def __init__(self, genesis: Genesis) -> None:
        self.genesis = genesis
        self._seen: dict[tuple[bytes, bytes], str | None] = {}

    def fault(self, height: int, block_hash: bytes, certificate: AnyCertificate) -> str | None:
        key = (block_hash, certificate.encode())
        if key not in self._seen:
            self._seen[key] = self._verify(height, block_hash, certificate)
        return self._seen[key]

    def _verify(self, height: int, block_hash: bytes, certificate: AnyCertificate) -> str | None:
        genesis = self.genesis
        try:
            certificate.check(genesis, height, block_hash)
        except ConsensusError as err:
            return f"commit certificate invalid: {err}"
        return None


def _read_pbft_node(path: Path, node: int, certificates: _Certificates, census: _Census) -> None:
    if not path.exists():
        census.fail(node, None, f"database {path} is missing")
        return
    try:
        with Store(path) as store:
            census.heights[node] = 0
            _verify_pbft_chain(store, node, certificates, census)
    except StorageError as err:
        census.fail(node, None, f"database unreadable: {err}")


def _verify_pbft_chain(store: Store, node: int, certificates: _Certificates, census: _Census) -> None:
    """Walk the stored blocks from height 1; stop at the first that fails (nothing above it is trusted)."""
    below = (0, GENESIS_HASH)
    while page := store.stored_blocks(below[0] + 1, BLOCKS_PER_READ):
        for height, stored_hash, raw in page:
            reason = _pbft_block_fault(height, stored_hash, raw, below, certificates)
            if reason is not None:
                census.fail(node, height, reason)
                return
            census.add(node, height, stored_hash)
            census.heights[node] = height
            below = (height, stored_hash)


def _pbft_block_fault(height: int, stored_hash: bytes, raw: bytes, below: tuple[int, bytes], certificates: _Certificates) -> str | None:
    if height != below[0] + 1:
        return f"heights are not contiguous from genesis: block {height} follows block {below[0]}"
    try:
        record = CommittedBlock.decode(raw)
    except ProtocolError as err:
        return f"stored block does not decode: {err}"
    block = record.block
    if block.height != height:
        return f"stored at height {height}, the block says height {block.height}"
    if block.hash != stored_hash:
        return "the stored hash is not the hash of the stored block's header"
    if block.prev_hash != below[1]:
        return f"broken hash link: prev_hash is not the hash of block {below[0]}"
    return certificates.fault(height, block.hash, record.certificate)


# -- PoW ---------------------------------------------------------------------------------------------
def check_pow_safety(data_dir: Path, nodes: int, genesis: Genesis, chains: Mapping[int, StoredChain]) -> SafetyCheck:
    """PoW: each node's main chain links to genesis, and agrees with every other at the heights both buried.

    ``chains`` are the chains :func:`harness.run.pow_chains.read_chains` could read; a node missing
    from it is a failure, with the reason read again from its database.
    """
    census = _Census()
    genesis_hash = genesis_block(genesis.chain_id, genesis.params.pow_initial_work_bits).hash
    for node in range(nodes):
        chain = chains.get(node)
        if chain is None:
            census.fail(node, None, _unreadable_reason(node_database(data_dir, node)))
            continue
        _census_pow_node(node, chain, genesis_hash, census)
    return census.verdict()


def _census_pow_node(node: int, chain: StoredChain, genesis_hash: bytes, census: _Census) -> None:
    main = chain.main_chain()
    tip_height = chain.blocks[main[-1]][1] if main else 0
    census.heights[node] = tip_height
    fault = _pow_chain_fault(chain, main, genesis_hash)
    if fault is not None:
        census.fail(node, *fault)
        return
    buried = tip_height - CONFIRMATIONS  # the node counts blocks this deep as confirmed
    for block_hash in main:
        height = chain.blocks[block_hash][1]
        if height <= buried:
            census.add(node, height, block_hash)


def _pow_chain_fault(chain: StoredChain, main: list[bytes], genesis_hash: bytes) -> tuple[int, str] | None:
    """The first main-chain block that does not hash, link or number as it should; None if all do."""
    below, expected_height = genesis_hash, 1
    for block_hash in main:
        prev_hash, height, _, block = chain.blocks[block_hash]
        if block.hash != block_hash:
            return height, "the stored hash is not the hash of the stored block's header"
        if height != expected_height or block.height != height:
            return height, f"main chain height {height} where {expected_height} was expected"
        if prev_hash != below or block.prev_hash != below:
            return height, f"broken hash link: prev_hash is not the hash of main-chain block {height - 1}"
        below, expected_height = block_hash, height + 1
    return None


def _unreadable_reason(path: Path) -> str:
    if not path.exists():
        return f"database {path} is missing"
    try:
        read_chain(path)
    except (StorageError, ProtocolError) as err:
        return f"database unreadable: {err}"
    return "database was not read"
