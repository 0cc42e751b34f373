"""PBFT for the PoP network: one height in flight, views with stake-weighted leader rotation.

Normal case at height h, view v, leader = the ledger's LeaderSchedule (popbench/pop/leaders.py: the
stake-weighted rotation leader_for_view(v + h), minus validators that recently missed their turn):
PRE-PREPARE(block) -> every validator checks and executes it -> PREPARE -> a quorum of PREPAREs whose
signatures verify (the block is *prepared*: this node locks on it, keeping those votes) -> COMMIT -> a
quorum of verified COMMIT signatures (the commit certificate) -> apply, persist, notify. A view that
does not commit within its timeout (doubling per failed view in a row) ends in VIEW-CHANGE carrying the
sender's lock; the next leader gathers a quorum of them into NEW-VIEW, and the NEW-VIEW decides what
the view may prepare: the highest certified block among them, else anything valid (the leader
re-proposes its own lock rather than a fresh block). A node that asked for view v never enters a view
below v. Every committed block is a stable checkpoint: messages below it are dropped. Design notes
and the safety argument: docs/consensus.md.
"""

from __future__ import annotations

from typing import Protocol

from popbench import bls, crypto
from popbench.counters import NodeCounters
from popbench.errors import ConsensusError, ProtocolError, StorageError
from popbench.events import EventSink, NoEvents
from popbench.genesis import VOTES_COLLECTOR, Genesis
from popbench.mempool import Mempool, PoolItem
from popbench.model.block import AggregateCertificate, Block, CommitCertificate, vote_message
from popbench.pop.catchup import BLOCKS_PER_REQUEST, blocks_answer
from popbench.pop.clock import Clock, LoopClock, TimerHandle
from popbench.pop.ledger import CommittedBlock, Ledger
from popbench.pop.pbft_round import (
    LockCertificate,
    LockCheck,
    Prepared,
    Proposal,
    Round,
    VoteBook,
    aggregate_lock_check,
    check_new_view_quorum,
    highest_certificate,
    list_lock_check,
    lock_voters,
    view_change_message,
)
from popbench.wire import (
    BlockResponse,
    Commit,
    CommitAggregate,
    CommitShare,
    ItemKind,
    Message,
    NewView,
    Prepare,
    PrepareAggregate,
    PrepareShare,
    PrePrepare,
    ViewChange,
)

VOTE_KINDS = (Prepare, Commit, PrepareShare, CommitShare)  # which of them a chain accepts is its vote path
MAX_VIEWS_AHEAD = 16  # votes for views further ahead are dropped, bounding memory
MAX_FUTURE_MESSAGES = 4096  # messages buffered for the next height
PROBATION_TIMEOUT_DIVISOR = 4  # a leader on probation gets base_timeout / 4 (500 ms at the default 2 s)


class PbftHost(Protocol):
    """What the engine needs from its node."""

    genesis: Genesis
    key: crypto.SigningKey
    node_id: int
    ledger: Ledger
    mempool: Mempool
    counters: NodeCounters

    def broadcast(self, message: Message) -> None: ...

    def send_to(self, node_id: int, message: Message) -> None: ...

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool: ...

    def block_committed(self, record: CommittedBlock, view: int, round_s: float) -> None: ...

    def request_items(self, node_id: int, kind: ItemKind, ids: list[bytes]) -> None: ...

    def request_catch_up(self, node_id: int) -> None: ...


class PbftEngine:
    """The replica state machine; a faulty validator subclasses it and overrides ``propose``."""

    def __init__(self, host: PbftHost, clock: Clock | None = None) -> None:
        self.host = host
        self.clock: Clock = clock or LoopClock()
        self.genesis = host.genesis
        self.chain_id = host.genesis.chain_id
        self.keys = host.genesis.public_keys
        self.quorum = host.genesis.quorum
        params = host.genesis.params
        self.batch_size = params.batch_size
        self.batch_interval_s = params.batch_interval_ms / 1000
        self.base_timeout_s = params.view_timeout_ms / 1000
        self.max_timeout_s = params.view_timeout_max_ms / 1000
        self.view = 0
        self.height = host.ledger.height + 1
        self.failed_views = 0  # consecutive views without a commit: the timeout backs off with it
        self.rounds: dict[int, Round] = {}
        self.prepared: Prepared | None = None
        self.required: bytes | None = None  # block bytes a NEW_VIEW obliges this view to carry
        self.required_from: list[int] = []  # validators that prepared ``required``: they hold its items
        self.entered_by_new_view = False  # this view at this height was entered through a checked NEW_VIEW
        self.vc_target: int | None = None
        self.view_changes: dict[int, dict[int, ViewChange]] = {}
        self.new_view_sent: set[int] = set()
        self.future: list[tuple[int, Message]] = []
        self.round_started_ns = self.clock.now_ns()
        self._timer: TimerHandle | None = None
        self._propose_timer: TimerHandle | None = None
        self.proposals_refused: dict[str, int] = {}
        self._helped_ns: dict[int, int] = {}  # validator -> when we last sent it blocks it had missed
        self.last_refusal = ""
        self.events: EventSink = NoEvents()  # the node gives it its log (popbench/events.py)
        self._init_vote_path(params.votes == VOTES_COLLECTOR)

    def _init_vote_path(self, collector: bool) -> None:
        """All-to-all ECDSA votes, or BLS shares through the view's collectors (docs/consensus.md)."""
        self.collector_path = collector
        params = self.genesis.params
        self.collector_count = min(params.collectors, self.genesis.n)
        self.collector_timeout_s = params.collector_timeout_ms / 1000
        self.collector_fallbacks = 0  # views in which this node gave up on the collectors and voted to all
        self._collector_timer: TimerHandle | None = None
        self._collectors: dict[int, tuple[int, ...]] = {}  # view -> its collectors, at this height
        if collector:
            self.bls_key = bls.bls_key_from_secret(self.host.key.secret)
            self.lock_check: LockCheck = aggregate_lock_check(self.genesis)
            self.vote_types: tuple[type[Prepare], type[Prepare]] = (PrepareShare, CommitShare)
        else:
            self.lock_check = list_lock_check(self.chain_id, self.keys, self.quorum, self.host.verify)
            self.vote_types = (Prepare, Commit)

    # -- who and when ----------------------------------------------------------------------------
    def leader(self, view: int | None = None) -> int:
        return self.host.ledger.leaders.leader(self.view if view is None else view, self.height)

    @property
    def is_leader(self) -> bool:
        return self.leader() == self.host.node_id

    def collectors(self, view: int) -> tuple[int, ...]:
        """The view's collectors on the collector path: its leader and the leaders of the views after it
        (by the reputation-aware schedule, so a validator left out of the rotation collects nothing),
        the first ``collectors`` distinct ones."""
        known = self._collectors.get(view)
        if known is not None:
            return known
        chosen: list[int] = []
        for offset in range(len(self.host.ledger.leaders.slots) + self.collector_count):
            node = self.leader(view + offset)
            if node not in chosen:
                chosen.append(node)
                if len(chosen) == self.collector_count:
                    break
        self._collectors[view] = found = tuple(chosen)
        return found

    def round(self, view: int | None = None) -> Round:
        view = self.view if view is None else view
        current = self.rounds.get(view)
        if current is None:
            current = self.rounds[view] = Round(view)
        return current

    def start(self) -> None:
        self.round_started_ns = self.clock.now_ns()
        self.work_arrived()

    def stop(self) -> None:
        for timer in (self._timer, self._propose_timer, self._collector_timer):
            if timer is not None:
                timer.cancel()
        self._collector_timer = None

    # -- inputs from the node ----------------------------------------------------------------------
    def work_arrived(self) -> None:
        """New items entered the mempool: start the view timer, let the leader batch, retry a pending proposal."""
        if not len(self.host.mempool):
            return
        self._ensure_timer()
        current = self.round()
        if current.pending is not None and self.vc_target is None:
            self._try_pending(current)
        if self.is_leader and current.proposal is None and current.pending is None and self.vc_target is None:
            self._schedule_proposal()

    def on_message(self, sender: int, message: Message) -> None:
        """A consensus message from the authenticated validator ``sender``."""
        height = getattr(message, "height", None)
        if height is None:
            return
        if height < self.height:  # below the last checkpoint: no longer needed here
            if type(message) is ViewChange:
                self._help_lagging(sender, height)
            return
        if height > self.height:
            self._hold_for_later(sender, height, message)
            return
        kind = type(message)
        if kind in VOTE_KINDS:
            self._on_vote(sender, message)  # type: ignore[arg-type]
        elif kind is PrepareAggregate or kind is CommitAggregate:
            self._on_aggregate(sender, message)  # type: ignore[arg-type]
        elif kind is PrePrepare:
            self._on_pre_prepare(sender, message)  # type: ignore[arg-type]
        elif kind is ViewChange:
            self._on_view_change(sender, message)  # type: ignore[arg-type]
        elif kind is NewView:
            self._on_new_view(sender, message)  # type: ignore[arg-type]

    def _help_lagging(self, sender: int, height: int) -> None:
        """``sender`` still asks to change view at a height we committed: it missed the commit (lost
        COMMITs, a broken link) and may hear nothing more of that height. Send it the committed blocks
        from there, as a catch-up answer, at most once per base view timeout."""
        now_ns = self.clock.now_ns()
        last_ns = self._helped_ns.get(sender)
        if last_ns is not None and now_ns - last_ns < self.base_timeout_s * 1e9:
            return
        self._helped_ns[sender] = now_ns
        blocks = blocks_answer(self.host.ledger, height, BLOCKS_PER_REQUEST)
        if blocks:
            self.host.send_to(sender, BlockResponse(blocks))

    def _hold_for_later(self, sender: int, height: int, message: Message) -> None:
        if height == self.height + 1 and len(self.future) < MAX_FUTURE_MESSAGES:
            self.future.append((sender, message))
        self.host.request_catch_up(sender)

    # -- proposing -------------------------------------------------------------------------------
    def _schedule_proposal(self) -> None:
        if len(self.host.mempool) >= self.batch_size:
            self._cancel_propose_timer()
            self.propose()
        elif self._propose_timer is None:
            elapsed_s = (self.clock.now_ns() - self.round_started_ns) / 1e9
            delay_s = max(0.0, self.batch_interval_s - elapsed_s)
            self._propose_timer = self.clock.call_later(delay_s, self._propose_due)

    def _propose_due(self) -> None:
        self._propose_timer = None
        current = self.round()
        idle = current.proposal is None and current.pending is None  # a second PRE-PREPARE would equivocate
        if self.is_leader and idle and self.vc_target is None and len(self.host.mempool):
            self.propose()

    def propose(self) -> None:
        """Leader: broadcast a PRE-PREPARE for this (view, height) and prepare it ourselves.

        What the NEW-VIEW obliges comes first, then this node's own lock: a locked leader never
        proposes a fresh block, since its lock may be the block a quorum is about to commit.
        """
        current = self.round()
        obligation = self._obligation()
        if obligation is not None:
            self.host.broadcast(PrePrepare(self.view, self.height, obligation))
            current.pending = (self.host.node_id, obligation)  # items it lacks are fetched like a replica's
            self._try_pending(current)
            return
        items = self.host.mempool.oldest(self.batch_size)
        block, post = self.host.ledger.build_block(self.view, self.host.node_id, items)
        raw = block.encode()
        self.host.broadcast(PrePrepare(self.view, self.height, raw))
        current.proposal = Proposal(block, raw, items, post)
        self._send_vote(current, Prepare)
        self._advance(current)

    def _obligation(self) -> bytes | None:
        """The exact block bytes this leader must propose in this view, if any."""
        if self.required is not None:
            return self.required
        return self.prepared.proposal.raw if self.prepared is not None else None

    def _cancel_propose_timer(self) -> None:
        if self._propose_timer is not None:
            self._propose_timer.cancel()
            self._propose_timer = None

    # -- PRE-PREPARE -------------------------------------------------------------------------------
    def _on_pre_prepare(self, sender: int, message: PrePrepare) -> None:
        if message.view < self.view or message.view > self.view + MAX_VIEWS_AHEAD:
            return
        target = self.round(message.view)
        if sender != self.leader(message.view):
            self._refuse("not-the-leader")
            return
        known = target.proposal.raw if target.proposal else target.pending[1] if target.pending else None
        if known is not None:
            if known != message.block:
                self.host.counters.equivocations_seen += 1
            return
        target.pending = (sender, message.block)
        if message.view == self.view and self.vc_target is None:
            self._try_pending(target)

    def _try_pending(self, current: Round) -> None:
        assert current.pending is not None
        leader, raw = current.pending
        try:
            block = Block.decode(raw)
        except ProtocolError:
            current.pending = None
            self._refuse("malformed-block")
            return
        if len(block.proof_ids) + len(block.transfer_ids) > self.batch_size:
            current.pending = None
            self._refuse("oversized-block")  # its items would be fetched beyond the mempool's bound
            return
        items = self._items_for(block, ask=self._item_sources(leader, raw))
        if items is None:
            return
        current.pending = None
        self._accept_proposal(current, leader, raw, block, items)

    def _item_sources(self, leader: int, raw: bytes) -> list[int]:
        """Who holds a proposal's items: its leader, and for a re-proposed block every validator that prepared it."""
        sources = [leader, *(self.required_from if raw == self.required else ())]
        return [node for node in dict.fromkeys(sources) if node != self.host.node_id]

    def _items_for(self, block: Block, ask: list[int] | None = None) -> list[PoolItem] | None:
        """The block's items from the mempool in block order; None (and ask ``ask``) if some are missing."""
        mempool = self.host.mempool
        ids = [*block.proof_ids, *block.transfer_ids]
        items = [mempool.get(item_id) for item_id in ids]
        missing = [item_id for item_id, item in zip(ids, items, strict=True) if item is None]
        if not missing:
            return items  # type: ignore[return-value]
        for node in ask or ():
            for kind, id_list in ((ItemKind.PROOF, block.proof_ids), (ItemKind.TRANSFER, block.transfer_ids)):
                wanted = [i for i in id_list if mempool.get(i) is None and i not in self.host.ledger.committed_ids]
                if wanted:
                    self.host.request_items(node, kind, wanted)
        return None

    def _accept_proposal(
        self, current: Round, leader: int, raw: bytes, block: Block | None = None, items: list[PoolItem] | None = None
    ) -> None:
        block = block or Block.decode(raw)
        items = items if items is not None else self._items_for(block)
        if items is None:
            return
        reason = self._proposal_fault(block, raw) or self._header_fault(current.view, leader, block, raw)
        if reason is not None:
            self._refuse(reason)
            return
        try:
            post = self.host.ledger.execute(block, items)
        except ConsensusError as err:
            self._refuse("invalid-block")
            self.last_refusal = str(err)
            return
        current.proposal = Proposal(block, raw, items, post)
        self._send_vote(current, Prepare)
        self._advance(current)

    def _proposal_fault(self, block: Block, raw: bytes) -> str | None:
        """Why this view may not prepare ``block``; the NEW-VIEW that opened the view decides, not an old lock.

        A checked NEW-VIEW with a certificate obliges exactly that block. One without a certificate
        proves no block can have committed in an earlier view (docs/consensus.md), so any valid block
        may be prepared. Only a view not opened by a NEW-VIEW keeps the lock as the rule.
        """
        if self.required is not None:
            return None if raw == self.required else "ignores-new-view"
        if self.entered_by_new_view:
            return None
        locked = self.prepared
        if locked is not None and locked.proposal.block.hash != block.hash:
            return "conflicts-with-lock"
        return None

    def _header_fault(self, view: int, leader: int, block: Block, raw: bytes) -> str | None:
        """A fresh block must name the view it is proposed in and its leader as proposer (who earns its
        reward). A re-proposed block keeps its original header: it passes as the NEW-VIEW's obligation,
        or as this node's own lock, whose certificate it has seen."""
        if raw == self.required or (self.prepared is not None and raw == self.prepared.proposal.raw):
            return None
        if block.view != view:
            return "wrong-view"
        if block.proposer != leader:
            return "wrong-proposer"
        return None

    def _refuse(self, reason: str) -> None:
        self.proposals_refused[reason] = self.proposals_refused.get(reason, 0) + 1
        self.events.emit("proposal-refused", height=self.height, view=self.view, reason=reason)

    # -- PREPARE and COMMIT ------------------------------------------------------------------------
    def _send_vote(self, current: Round, kind: type[Prepare]) -> None:
        """Vote PREPARE (``kind`` Prepare) or COMMIT (Commit) for the round's proposal, on the chain's vote path."""
        assert current.proposal is not None
        block_hash = current.proposal.block.hash
        is_commit = kind is Commit
        label = "commit" if is_commit else "prepare"
        signature = self._vote_signature(label, current.view, self.height, block_hash)
        vote = self.vote_types[is_commit](current.view, self.height, block_hash, self.host.node_id, signature)
        book = current.commits if is_commit else current.prepares
        book.add(block_hash, self.host.node_id, signature, checked=True)
        if is_commit:
            current.sent_commit = True
        else:
            current.sent_prepare = True
        current.own_votes.append(vote)
        self._broadcast_vote(vote)
        if self.collector_path and not current.fallback and current.view == self.view:
            self._restart_collector_timer()

    def _vote_signature(self, label: str, view: int, height: int, block_hash: bytes) -> bytes:
        """ECDSA on the all-to-all path, a BLS share on the collector path, over the same vote message."""
        message = vote_message(label, self.chain_id, view, height, block_hash)
        return self.bls_key.sign(message) if self.collector_path else self.host.key.sign(message)

    def _broadcast_vote(self, vote: Prepare) -> None:
        """Send this node's PREPARE or COMMIT where it goes (a faulty voter overrides this): to every
        validator, or on the collector path to the view's collectors until the view falls back."""
        current = self.rounds.get(vote.view)
        if not self.collector_path or (current is not None and current.fallback):
            self.host.broadcast(vote)
            return
        for collector in self.collectors(vote.view):
            if collector != self.host.node_id:
                self.host.send_to(collector, vote)

    def _on_vote(self, sender: int, vote: Prepare) -> None:
        if vote.voter != sender or type(vote) not in self.vote_types:
            self.host.counters.protocol_errors += 1  # a validator speaks only for itself, on the chain's vote path
            return
        is_commit = type(vote) is self.vote_types[1]
        if vote.view > self.view + MAX_VIEWS_AHEAD or (vote.view < self.view and not is_commit):
            return  # a PREPARE of a past view can no longer lock anything; a COMMIT can still certify
        target = self.round(vote.view)
        book = target.commits if is_commit else target.prepares
        if not book.add(vote.block_hash, vote.voter, vote.signature):
            self.host.counters.equivocations_seen += 1
            return
        if self.collector_path and not target.fallback and self.host.node_id not in self.collectors(vote.view):
            self._join_fallback(target, book)
        self._advance(target)

    # -- the collector path: certificates, the collector timer, the fall-back to all-to-all ---------------
    def _on_aggregate(self, sender: int, message: PrepareAggregate) -> None:
        """A collector's PREPARE or COMMIT certificate: one aggregate to verify instead of n - f votes."""
        is_commit = type(message) is CommitAggregate
        if not self.collector_path or message.view > self.view + MAX_VIEWS_AHEAD or (message.view < self.view and not is_commit):
            return
        if sender not in self.collectors(message.view):
            self.host.counters.protocol_errors += 1  # only the view's collectors send certificates
            return
        target = self.round(message.view)
        label = "commit" if is_commit else "prepare"
        key = (label, message.block_hash)
        if key in target.certificates or sender in target.bad_collectors:
            return  # one verified certificate is enough; a collector that lied once is not heard again
        certificate = AggregateCertificate(message.view, message.signers, message.aggregate)
        self.host.counters.signature_verifications += 1
        try:
            certificate.check(self.genesis, self.height, message.block_hash, label)
        except ConsensusError as err:  # the reason goes to the event log; STATUS counts it in protocol_errors
            target.bad_collectors.add(sender)
            self.host.counters.protocol_errors += 1
            self.events.emit("certificate-refused", height=self.height, view=message.view, sender=sender, kind=label,
                             reason=str(err))  # fmt: skip
            return
        target.certificates[key] = certificate
        proposal = target.proposal
        if is_commit and (proposal is None or proposal.block.hash != message.block_hash):
            self.host.request_catch_up(sender)  # decided, but not on a block this node accepted: fetch it
            return
        self._advance(target)

    def _join_fallback(self, current: Round, book: VoteBook) -> None:
        """Votes reach a non-collector only from validators that gave up on the collectors: once f + 1
        of them have (one honest), the view's collectors failed for someone, so vote to all here too."""
        if sum(1 for voter in book.choice if voter != self.host.node_id) > self.genesis.f:
            self._fall_back(current, "others-fell-back")

    def _restart_collector_timer(self) -> None:
        if self._collector_timer is not None:
            self._collector_timer.cancel()
        self._collector_timer = self.clock.call_later(self.collector_timeout_s, self._collector_timed_out)

    def _collector_timed_out(self) -> None:
        """No certificate came in time after this node's last share: the view's votes go all-to-all."""
        self._collector_timer = None
        current = self.rounds.get(self.view)
        if current is not None and not current.fallback and self.vc_target is None:
            self._fall_back(current, "collector-timeout")

    def _fall_back(self, current: Round, reason: str) -> None:
        current.fallback = True
        self.collector_fallbacks += 1
        self.events.emit("collector-fallback", height=self.height, view=current.view, reason=reason)
        for vote in current.own_votes:
            self._broadcast_vote(vote)  # type: ignore[arg-type]

    def _advance(self, current: Round) -> None:
        if self.rounds.get(current.view) is not current:
            return  # a round of a height that has since committed (next_height cleared it)
        proposal = current.proposal
        if proposal is None:
            self._commit_without_proposal(current)
            return
        block_hash = proposal.block.hash
        if not current.sent_commit and self.vc_target is None and current.view == self.view:
            prepares = self._quorum(current, current.prepares, "prepare", block_hash)
            if prepares is not None:
                self.prepared = Prepared(current.view, proposal, prepares)
                self._send_vote(current, Commit)
        commits = self._quorum(current, current.commits, "commit", block_hash)
        if commits is not None:
            self._commit(current, proposal, commits)

    def _quorum(self, current: Round, book: VoteBook, label: str, block_hash: bytes) -> LockCertificate | None:
        if self.collector_path:
            return self._aggregate_quorum(current, book, label, block_hash)
        return self._verified_quorum(current, book, label, block_hash)

    def _aggregate_quorum(self, current: Round, book: VoteBook, label: str, block_hash: bytes) -> AggregateCertificate | None:
        """A certificate for ``block_hash``: a collector's (verified on arrival), or this node's own sum of
        n - f shares (a collector's, or anyone's once the view fell back). A collector sends the one it
        formed to every validator, once per kind."""
        key = (label, block_hash)
        certificate = current.certificates.get(key)
        if certificate is None:
            if book.count(block_hash) < self.quorum:
                return None
            message = vote_message(label, self.chain_id, current.view, self.height, block_hash)
            before = self.genesis.bls_keys.verifications
            formed, dropped = book.aggregated(block_hash, message, current.view, self.genesis)
            self.host.counters.signature_verifications += self.genesis.bls_keys.verifications - before
            self.host.counters.protocol_errors += dropped
            if formed is None:
                return None
            certificate = current.certificates[key] = formed
        if label not in current.certificates_sent and self.host.node_id in self.collectors(current.view):
            current.certificates_sent.add(label)
            self.events.emit("certificate-sent", height=self.height, view=current.view, kind=label,
                             signers=book.count(block_hash))  # fmt: skip
            kind = CommitAggregate if label == "commit" else PrepareAggregate
            self._send_certificate(kind(current.view, self.height, block_hash, certificate.signers, certificate.aggregate))
        return certificate

    def _send_certificate(self, message: PrepareAggregate) -> None:
        """A collector sends the certificate it formed to every validator (a faulty collector overrides this)."""
        self.host.broadcast(message)

    def _verified_quorum(self, current: Round, book: VoteBook, label: str, block_hash: bytes) -> dict[int, bytes] | None:
        """A quorum of votes for ``block_hash`` whose signatures verify, or None.

        Signatures are checked only once a quorum has arrived (the cheap path costs a quorum of
        verifications per kind), each at most once; a bad one is dropped and counted as a protocol error.
        """
        if book.count(block_hash) < self.quorum:
            return None
        message = vote_message(label, self.chain_id, current.view, self.height, block_hash)
        votes, dropped = book.verified(block_hash, message, self.keys, self.host.verify)
        self.host.counters.protocol_errors += dropped
        return votes if len(votes) >= self.quorum else None

    def _commit_without_proposal(self, current: Round) -> None:
        """A quorum of COMMITs for a block this node never accepted: fetch it committed from a voter.

        The votes are not verified here: catch-up checks the certificate of what it fetches.
        """
        for votes in current.commits.by_hash.values():
            if len(votes) >= self.quorum:
                voter = next(v for v in votes if v != self.host.node_id)
                self.host.request_catch_up(voter)
                return

    def _commit(self, current: Round, proposal: Proposal, votes: LockCertificate) -> None:
        certificate = votes if isinstance(votes, AggregateCertificate) else CommitCertificate(current.view, sorted(votes.items())[:self.quorum])  # fmt: skip
        try:
            record = self.host.ledger.commit(proposal.block, certificate, proposal.items, proposal.post)
        except StorageError as err:  # the disk refused (docs/faults.md): nothing was written; catch up later
            self.events.emit("commit-failed", height=self.height, view=current.view, reason=str(err))
            return
        round_s = (self.clock.now_ns() - self.round_started_ns) / 1e9
        self.events.emit("commit", height=self.height, view=current.view, round_ms=round(round_s * 1000, 3),
                         items=len(proposal.items))  # fmt: skip
        self.host.block_committed(record, current.view, round_s)
        self.next_height(current.view)

    # -- moving on -------------------------------------------------------------------------------
    def next_height(self, committed_view: int) -> None:
        """After a commit (ours or a caught-up one): a fresh height, same or later view."""
        self.stop()
        self._timer = self._propose_timer = None
        self.height = self.host.ledger.height + 1
        self.view = max(self.view, committed_view)
        self.failed_views = 0
        self.rounds.clear()
        self.prepared = self.required = self.vc_target = None
        self.required_from = []
        self.entered_by_new_view = False
        self.view_changes.clear()
        self.new_view_sent.clear()
        self._collectors.clear()  # the schedule may have changed with the committed block
        self.round_started_ns = self.clock.now_ns()
        self._replay_future()
        self.work_arrived()

    def _replay_future(self) -> None:
        held, self.future = self.future, []
        for sender, message in held:
            self.on_message(sender, message)

    # -- timeouts and view changes ------------------------------------------------------------------
    def _timeout_s(self) -> float:
        """The view timeout, doubling per failed view in a row; a quarter of the base while the awaited
        view's leader is on probation (it missed a turn lately: popbench/pop/leaders.py), so retrying a
        validator that is still down costs a fraction of a view, not a whole one."""
        awaited = self.leader(self.vc_target if self.vc_target is not None else self.view)
        if self.host.ledger.leaders.on_probation(awaited):
            return self.base_timeout_s / PROBATION_TIMEOUT_DIVISOR
        return min(self.base_timeout_s * 2.0**self.failed_views, self.max_timeout_s)

    def _ensure_timer(self) -> None:
        if self._timer is None:
            self._timer = self.clock.call_later(self._timeout_s(), self._timed_out)

    def _restart_timer(self) -> None:
        """A node that asks for a view gives that view a whole timeout to bring its NEW-VIEW (Castro-Liskov
        §4.5.2). Without this, a node that joined others' VIEW-CHANGEs (f+1 of them) just before its own
        timer fired took that old timer for the new view's failure, asked for the view after it and
        refused the NEW-VIEW arriving a moment later: one vote short of every quorum, with one validator
        of four down the network stalled for 14 s of backed-off timeouts (issue 20)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._ensure_timer()

    def _timed_out(self) -> None:
        """Ask for the next view; or, while too few have asked for the one we asked for, ask for it again.

        A node moves its request on only once a quorum asked for its current one or a later one (as in
        Castro-Liskov): running ahead alone would leave it waiting in a view nobody else reaches in
        time, and since it never goes back, views it left could lack its VIEW-CHANGE for good.
        """
        self._timer = None
        self.failed_views += 1
        target = self.vc_target
        self.events.emit("timer-fired", height=self.height, view=self.view, asked_for=target,
                         failed_views=self.failed_views, mempool=len(self.host.mempool))  # fmt: skip
        if target is not None and self._asking_for_at_least(target) < self.quorum:
            self.host.broadcast(self.view_changes[target][self.host.node_id])  # it may have been lost
        else:
            self._send_view_change((target or self.view) + 1)
        self._ensure_timer()  # if NEW_VIEW does not come either, try again

    def _asking_for_at_least(self, view: int) -> int:
        """How many validators asked for ``view`` or a later one at this height."""
        return len({voter for asked, votes in self.view_changes.items() if asked >= view for voter in votes})

    def _send_view_change(self, new_view: int) -> None:
        """Ask for ``new_view``, carrying this node's lock. Views asked for only grow, and this node will
        not enter a view below the last it asked for: so the lock a VIEW-CHANGE carries stays true."""
        if self.vc_target is not None and new_view <= self.vc_target:
            return
        self.vc_target = new_view
        self._cancel_propose_timer()
        self._restart_timer()
        lock = self.prepared
        block, votes = (lock.proposal.raw, lock.encoded_votes()) if lock else (b"", b"")
        unsigned = ViewChange(new_view, self.height, self.host.node_id, lock.view if lock else 0, block, votes, bytes(64))
        unsigned.signature = self.host.key.sign(view_change_message(self.chain_id, unsigned))
        self.events.emit("view-change-sent", height=self.height, view=self.view, new_view=new_view,
                         prepared_view=lock.view if lock else None)  # fmt: skip
        self.host.broadcast(unsigned)
        self._record_view_change(unsigned)

    def _on_view_change(self, sender: int, vc: ViewChange) -> None:
        if vc.voter != sender or vc.new_view <= self.view or vc.new_view > self.view + MAX_VIEWS_AHEAD:
            return
        try:
            signed = view_change_message(self.chain_id, vc)
        except ProtocolError:  # its prepared block does not decode: the sender's fault, not ours
            self.host.counters.protocol_errors += 1
            return
        if not self.host.verify(self.keys[sender], signed, vc.signature):
            self.host.counters.protocol_errors += 1
            return
        self.events.emit("view-change-received", height=self.height, view=self.view, sender=sender,
                         new_view=vc.new_view)  # fmt: skip
        self._record_view_change(vc)
        self._join_if_f_plus_one()

    def _record_view_change(self, vc: ViewChange) -> None:
        self.view_changes.setdefault(vc.new_view, {})[vc.voter] = vc
        if self.leader(vc.new_view) == self.host.node_id:
            self._maybe_send_new_view(vc.new_view)

    def _join_if_f_plus_one(self) -> None:
        """f+1 validators asking for later views include an honest one: join the lowest such view."""
        highest: dict[int, int] = {}
        for view, votes in self.view_changes.items():
            for voter in votes:
                highest[voter] = max(highest.get(voter, 0), view)
        views = sorted(highest.values(), reverse=True)
        if len(views) > self.genesis.f:
            view = views[self.genesis.f]
            if view > (self.vc_target or self.view):
                self._send_view_change(view)

    def _maybe_send_new_view(self, new_view: int) -> None:
        votes = self.view_changes.get(new_view, {})
        if len(votes) < self.quorum or new_view in self.new_view_sent or new_view <= self.view:
            return
        if self.vc_target is not None and new_view < self.vc_target:
            return  # this node already asked for a later view: its VIEW-CHANGE here may be stale
        if self.host.node_id not in votes:
            self._send_view_change(new_view)  # the new leader must itself be in the view change
            return
        self.new_view_sent.add(new_view)
        self.events.emit("new-view-sent", height=self.height, new_view=new_view, voters=sorted(votes))
        bodies = [vc.encode_body() for vc in votes.values()]
        self.host.broadcast(NewView(new_view, self.height, bodies))
        best = highest_certificate(list(votes.values()), self.lock_check)
        self._enter_view(new_view, best)

    def _on_new_view(self, sender: int, message: NewView) -> None:
        if message.new_view <= self.view or sender != self.leader(message.new_view):
            return
        if self.vc_target is not None and message.new_view < self.vc_target:
            self.events.emit("new-view-ignored", height=self.height, new_view=message.new_view, sender=sender,
                             asked_for=self.vc_target)  # fmt: skip
            return  # our VIEW-CHANGE for a later view is out; locking below it would make it a lie
        try:
            changes = check_new_view_quorum(message.view_changes, message.new_view, self.height,
                                            self.chain_id, self.keys, self.quorum, self.host.verify)  # fmt: skip
        except (ConsensusError, ProtocolError) as err:
            self.host.counters.protocol_errors += 1
            self.events.emit("new-view-refused", height=self.height, new_view=message.new_view, sender=sender,
                             reason=str(err))  # fmt: skip
            return
        best = highest_certificate(changes, self.lock_check)
        self._enter_view(message.new_view, best)

    def _enter_view(self, view: int, justified: ViewChange | None) -> None:
        """Enter ``view`` through a checked NEW-VIEW whose highest certificate (if any) is ``justified``."""
        self.stop()
        self._timer = self._propose_timer = None
        self.view = view
        self.vc_target = None
        self.required = justified.prepared_block if justified is not None else None
        self.required_from = lock_voters(justified, self.genesis) if justified is not None else []
        self.entered_by_new_view = True
        self.host.counters.view_changes += 1
        self.events.emit("view-entered", height=self.height, view=view, leader=self.leader(),
                         carries_lock=self.required is not None)  # fmt: skip
        for old in [v for v in self.rounds if v < view]:
            del self.rounds[old]
        self.round_started_ns = self.clock.now_ns()
        current = self.round()
        if self.is_leader and current.proposal is None and current.pending is None:
            self.propose() if self._obligation() is not None else self._schedule_proposal()
        elif current.pending is not None:
            self._try_pending(current)
        self._advance(current)
        if len(self.host.mempool) or self._obligation() is not None:
            self._ensure_timer()

    def caught_up(self, committed_view: int) -> None:
        """The node applied blocks from a peer: drop this height's state and move on."""
        if self.host.ledger.height + 1 != self.height:
            self.events.emit("caught-up", height=self.host.ledger.height, view=committed_view)
            self.next_height(committed_view)
