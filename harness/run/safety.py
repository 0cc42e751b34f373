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
from popbench.model.block import AnyCertificate, CommitCertificate
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
    """Which nodes hold which block at each compared height, and which nodes failed. Heights are judged
    when settled and then forgotten, so the PBFT walk holds one page of heights at a time."""

    def __init__(self) -> None:
        self.by_height: dict[int, dict[bytes, list[int]]] = defaultdict(lambda: defaultdict(list))
        self.heights: dict[int, int] = {}
        self.unverified: list[Unverified] = []
        self.conflicts: list[Conflict] = []  # the first MAX_CONFLICTS_LISTED
        self.conflicts_total = 0
        self.heights_settled = 0

    def add(self, node: int, height: int, block_hash: bytes) -> None:
        self.by_height[height][block_hash].append(node)

    def fail(self, node: int, height: int | None, reason: str) -> None:
        self.unverified.append(Unverified(node, height, reason))

    def settle(self) -> None:
        """Judge every height gathered so far (a conflict: two blocks at one height) and forget them."""
        for height, hashes in sorted(self.by_height.items()):
            if len(hashes) > 1:
                self.conflicts_total += 1
                if len(self.conflicts) < MAX_CONFLICTS_LISTED:
                    self.conflicts.append(Conflict(height, {h.hex(): nodes for h, nodes in hashes.items()}))
        self.heights_settled += len(self.by_height)
        self.by_height.clear()

    def verdict(self) -> SafetyCheck:
        self.settle()
        return SafetyCheck(
            nodes_checked=len(self.heights), heights_checked=self.heights_settled,
            agree=not self.conflicts_total and not self.unverified, conflicts=self.conflicts,
            heights=dict(sorted(self.heights.items())), unverified=self.unverified, conflicts_total=self.conflicts_total,
        )  # fmt: skip


# -- PBFT --------------------------------------------------------------------------------------------
def check_safety(data_dir: Path, nodes: int, genesis: Genesis) -> SafetyCheck:
    """PBFT: every node's stored chain is certified and linked, and no two nodes differ at a height.

    The chains are walked side by side, a page of heights at a time: the nodes' certificates for one
    block differ (each node keeps the quorum it heard first) but share most votes, so each vote is
    verified once a page instead of once a node (16 validators, an hour at 200 proofs/s: 3.9 million
    ECDSA verifications became about 0.7 million), and memory holds one page however long the chain."""
    census = _Census()
    certificates = _Certificates(genesis)
    walks = [walk for node in range(nodes) if (walk := _ChainWalk(node, node_database(data_dir, node))).found(census)]
    while walks:
        walks = [walk for walk in walks if walk.next_page(certificates, census)]
        census.settle()
        certificates.forget()
    return census.verdict()


class _Certificates:
    """Verifies commit certificates against the genesis, remembering within a page what it verified: a
    certificate several nodes hold is checked once, and a vote several certificates carry is verified once."""

    def __init__(self, genesis: Genesis) -> None:
        self.genesis = genesis
        self._seen: dict[tuple[bytes, bytes], str | None] = {}
        self._good_votes: set[tuple[bytes, int, bytes]] = set()

    def fault(self, height: int, block_hash: bytes, certificate: AnyCertificate) -> str | None:
        key = (block_hash, certificate.encode())
        if key not in self._seen:
            self._seen[key] = self._verify(height, block_hash, certificate)
        return self._seen[key]

    def forget(self) -> None:
        self._seen.clear()
        self._good_votes.clear()

    def _verify(self, height: int, block_hash: bytes, certificate: AnyCertificate) -> str | None:
        genesis = self.genesis
        try:
            if isinstance(certificate, CommitCertificate):  # a list of votes; an aggregate is one check anyway
                certificate.check(genesis, height, block_hash, known_good=self._good_votes)
            else:
                certificate.check(genesis, height, block_hash)
        except ConsensusError as err:
            return f"commit certificate invalid: {err}"
        return None


class _ChainWalk:
    """One node's stored chain, verified a page at a time from height 1; it stops at the first block that
    fails (nothing above it is trusted) or at the chain's head."""

    def __init__(self, node: int, path: Path) -> None:
        self.node = node
        self.path = path
        self.below = (0, GENESIS_HASH)

    def found(self, census: _Census) -> bool:
        if not self.path.exists():
            census.fail(self.node, None, f"database {self.path} is missing")
            return False
        return True

    def next_page(self, certificates: _Certificates, census: _Census) -> bool:
        """Verify the next page of blocks; True while more may follow."""
        try:
            with Store(self.path) as store:
                census.heights.setdefault(self.node, 0)
                page = store.stored_blocks(self.below[0] + 1, BLOCKS_PER_READ)
        except StorageError as err:
            census.fail(self.node, None, f"database unreadable: {err}")
            return False
        for height, stored_hash, raw in page:
            reason = _pbft_block_fault(height, stored_hash, raw, self.below, certificates)
            if reason is not None:
                census.fail(self.node, height, reason)
                return False
            census.add(self.node, height, stored_hash)
            census.heights[self.node] = height
            self.below = (height, stored_hash)
        return len(page) == BLOCKS_PER_READ


def _pbft_block_fault(height: int, stored_hash: bytes, raw: bytes, below: tuple[int, bytes], certificates: _Certificates) -> str | None:
    if height != below[0] + 1:
        return f"heights are not contiguous from genesis: block {height} follows block {below[0]}"
    try:
        block, certificate = CommittedBlock.decode_certified(raw)
    except ProtocolError as err:
        return f"stored block does not decode: {err}"
    if block.height != height:
        return f"stored at height {height}, the block says height {block.height}"
    if block.hash != stored_hash:
        return "the stored hash is not the hash of the stored block's header"
    if block.prev_hash != below[1]:
        return f"broken hash link: prev_hash is not the hash of block {below[0]}"
    return certificates.fault(height, block.hash, certificate)


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
