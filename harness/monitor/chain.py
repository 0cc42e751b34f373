"""The validator leaderboard: who proposed and who voted, read off the committed chain, and the rewards
each validator has earned, read off the state (docs/monitoring.md, "Leaderboard").

STATUS says nothing per validator, so the leaderboard asks the nodes with requests they already serve
to any client: BLOCK_REQUEST (committed blocks with their commit certificates) and SNAPSHOT_REQUEST (the
state's accounts). Each node assembles its own certificate from the first quorum of COMMIT votes it
verified, always its own among them, so a validator counts as having voted at a height when the
certificate of at least one *other* node carries its signature; that is also what "verification
accuracy" is: of the committed blocks it could be seen voting on, the share on which a peer verified its
vote for the very block the quorum committed (a validator that is down, withholds its votes, signs badly
or votes for another hash scores low; an honest one that is always the slowest to every peer too).

Cost is bounded: at most MAX_SOURCES nodes are read, at most READS_PER_REFRESH requests of at most
32 blocks each per node and refresh, each within the sample deadline; a chain that grows faster than
that is sampled (the reader jumps ahead and says how many blocks it skipped). A snapshot of the state
is read from one node every SNAPSHOT_EVERY_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from harness.observe.live import LiveState
from popbench.client import NodeClient
from popbench.errors import ClientError, ProtocolError
from popbench.genesis import Genesis
from popbench.pop.ledger import CommittedBlock
from popbench.pop.state import ACCOUNT
from popbench.wire import BlockRequest, BlockResponse, SnapshotChunk, SnapshotRequest

Address = tuple[str, int]
BLOCKS_PER_REQUEST = 32  # what a node answers at most (popbench.pop.catchup.BLOCKS_PER_REQUEST)
READS_PER_REFRESH = 4
HISTORY_BLOCKS = 1024  # attaching to a long chain reads its last 1024 blocks, not all of it
MAX_SOURCES = 4  # nodes whose certificates are read
SNAPSHOT_EVERY_S = 5.0
MAX_SNAPSHOT_CHUNKS = 4  # 4 MiB of accounts; a larger state is not read for rewards


@dataclass
class Standing:
    """One validator's place on the leaderboard, over the blocks read."""

    node_id: int
    proposed: int = 0
    voted: int = 0  # blocks whose certificate, at some other node, carries its vote
    observed: int = 0  # blocks some other node's certificate could show it on
    rounds: int = 0  # blocks it proposed or voted on
    rewards: int | None = None  # its account's rewards total (None: not read)

    @property
    def accuracy(self) -> float | None:
        return self.voted / self.observed if self.observed else None


def ranked(standings: dict[int, Standing]) -> list[Standing]:
    """Most rounds first, then most proposed, then the lower id."""
    return sorted(standings.values(), key=lambda s: (-s.rounds, -s.proposed, s.node_id))


def certificate_voters(certificate: object, genesis: Genesis | None) -> set[int]:
    """Who signed a commit certificate: a list of signatures names its voters; an aggregate (the BLS
    collector path) names them in a bitmap of the genesis' validators."""
    votes = getattr(certificate, "votes", None)
    if votes is not None:
        return {voter for voter, _ in votes}
    signer_ids = getattr(certificate, "signer_ids", None)
    if signer_ids is not None and genesis is not None:
        with contextlib.suppress(ProtocolError):
            return set(signer_ids(genesis))
    return set()


@dataclass
class ChainReader:
    """Reads new committed blocks from up to MAX_SOURCES nodes at each refresh and keeps the tally."""

    nodes: dict[int, Address]
    chain_id: bytes | None
    genesis: Genesis | None
    deadline_s: float
    standings: dict[int, Standing] = field(default_factory=dict)
    next_height: int | None = None
    blocks_read: int = 0
    skipped: int = 0
    rewards_height: int | None = None
    _clients: dict[int, NodeClient] = field(default_factory=dict)
    _snapshot_at: float = 0.0

    def __post_init__(self) -> None:
        validators = [v.node_id for v in self.genesis.validators] if self.genesis is not None else list(self.nodes)
        self.standings = {node_id: Standing(node_id) for node_id in sorted(validators)}

    async def refresh(self, live: LiveState) -> None:
        """Read what was committed since the last refresh (bounded), then the rewards if they are due."""
        heights = {n.node_id: n.status.height for n in live.up if n.status is not None and n.node_id in self.nodes}
        sources = sorted(heights)[:MAX_SOURCES]
        if not sources:
            return
        top = min(heights[s] for s in sources)
        start = self._start(top)
        end = min(top, start + READS_PER_REFRESH * BLOCKS_PER_REQUEST - 1)
        if end >= start:
            reads = await asyncio.gather(*(self._read_within(s, start, end) for s in sources))
            self._tally(start, end, dict(zip(sources, reads, strict=True)))
            self.next_height = end + 1
        if time.monotonic() - self._snapshot_at >= SNAPSHOT_EVERY_S and top > 0:
            self._snapshot_at = time.monotonic()
            await self._rewards_within(sources[0], top)

    def _start(self, top: int) -> int:
        if self.next_height is None:
            self.next_height = max(1, top - HISTORY_BLOCKS + 1)
        elif top - self.next_height >= HISTORY_BLOCKS:
            jump_to = top - HISTORY_BLOCKS + 1
            self.skipped += jump_to - self.next_height
            self.next_height = jump_to
        return self.next_height

    # -- blocks ------------------------------------------------------------------------------------
    async def _read_within(self, node_id: int, start: int, end: int) -> dict[int, CommittedBlock]:
        """Blocks ``start``..``end`` of one node, as many as arrive by the deadline."""
        got: dict[int, CommittedBlock] = {}
        try:
            await asyncio.wait_for(self._read(node_id, start, end, got), self.deadline_s)
        except TimeoutError:
            self._drop(node_id)  # its late answers must not be taken for the next requests'
        return got

    async def _read(self, node_id: int, start: int, end: int, got: dict[int, CommittedBlock]) -> None:
        height = start
        while height <= end:
            answer = await self._request(node_id, BlockRequest(height, min(BLOCKS_PER_REQUEST, end - height + 1)))
            if not isinstance(answer, BlockResponse) or not answer.blocks:
                return
            for raw in answer.blocks:
                try:
                    record = CommittedBlock.decode(raw)
                except ProtocolError:
                    return
                if record.block.height != height:
                    return
                got[height] = record
                height += 1

    def _tally(self, start: int, end: int, reads: dict[int, dict[int, CommittedBlock]]) -> None:
        for height in range(start, end + 1):
            copies = {source: blocks[height] for source, blocks in reads.items() if height in blocks}
            if not copies:
                continue
            self.blocks_read += 1
            proposer = next(iter(copies.values())).block.proposer
            voters = {source: certificate_voters(record.certificate, self.genesis) for source, record in copies.items()}
            for node_id, standing in self.standings.items():
                others = [votes for source, votes in voters.items() if source != node_id]
                voted = any(node_id in votes for votes in others)
                standing.observed += bool(others)
                standing.voted += voted
                standing.proposed += proposer == node_id
                standing.rounds += voted or proposer == node_id

    # -- rewards -----------------------------------------------------------------------------------
    async def _rewards_within(self, node_id: int, height: int) -> None:
        if self.genesis is None:
            return  # without the genesis, accounts cannot be told apart by validator
        try:
            await asyncio.wait_for(self._rewards(node_id, height), self.deadline_s)
        except TimeoutError:
            self._drop(node_id)

    async def _rewards(self, node_id: int, height: int) -> None:
        """The state at ``height`` (a node answers from the head when it has moved on; every chunk then
        names the snapshot's own height, so all of them come from one state)."""
        assert self.genesis is not None
        first = await self._request(node_id, SnapshotRequest(height, 0))
        if not isinstance(first, SnapshotChunk) or first.chunk_count > MAX_SNAPSHOT_CHUNKS or first.height == 0:
            return
        chunks = [first.data]
        for index in range(1, first.chunk_count):
            more = await self._request(node_id, SnapshotRequest(first.height, index))
            if not isinstance(more, SnapshotChunk) or more.height != first.height:
                return
            chunks.append(more.data)
        data = b"".join(chunks)
        if len(data) % ACCOUNT.size:
            return
        rewards = {address: earned for address, _, _, earned, _ in ACCOUNT.iter_unpack(data)}
        for validator in self.genesis.validators:
            if validator.node_id in self.standings:
                self.standings[validator.node_id].rewards = rewards.get(validator.address, 0)
        self.rewards_height = first.height

    # -- connections -------------------------------------------------------------------------------
    async def _request(self, node_id: int, message: BlockRequest | SnapshotRequest) -> object:
        """One request over the kept connection to ``node_id``; None when it fails (dialled again next time)."""
        client = self._clients.get(node_id)
        try:
            if client is None or client.conn is None or not client.conn.is_open:
                client = self._clients[node_id] = await NodeClient.connect(*self.nodes[node_id], chain_id=self.chain_id,
                                                                           timeout_s=self.deadline_s)  # fmt: skip
            return await client.request(message, self.deadline_s)
        except ClientError:
            self._drop(node_id)
            return None

    def _drop(self, node_id: int) -> None:
        client = self._clients.pop(node_id, None)
        if client is not None:
            client.close()

    def close(self) -> None:
        for node_id in list(self._clients):
            self._drop(node_id)
