"""What must hold in every schedule, checked as it runs (Jepsen's checkers: each set of bad things is empty).

- Agreement: no two honest nodes commit different blocks at one height.
- Validity: an honest node commits only a block the leader of some view sent in a PRE-PREPARE, that
  extends the agreed chain, names the leader of its header's view (by the leader schedule of the chain
  below it, popbench/pop/leaders.py) as proposer (a re-proposed block
  keeps its header, so this holds for it too; the engine checks it since 01e3a4f), and lists each
  item once, every one submitted by a client and none committed before; and it carries a
  certificate of n - f valid COMMIT signatures (on the collector path: an aggregate of n - f shares).
- Every honest ledger's head is the agreed block at its height (no commit bypasses the checker), and
  at the end its state has the root that block claims (a restarted node rebuilt it exactly).
- Liveness (judged by the runner once the network is stable): every honest node commits again.
Byzantine nodes' commits are not judged: their ledgers are theirs to corrupt.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from popbench.errors import ConsensusError, ProtocolError
from popbench.genesis import Genesis
from popbench.model.block import Block
from popbench.pop.leaders import LeaderSchedule
from popbench.pop.ledger import GENESIS_HASH, CommittedBlock
from popbench.wire import Message, PrePrepare
from tests.sim.network import SimHost, short


class InvariantViolation(Exception):
    """Raised when a schedule breaks agreement, validity or liveness; the runner adds seed and trace."""


class Checker:
    """Watches every PRE-PREPARE and every commit of one schedule."""

    def __init__(self, genesis: Genesis, honest: Iterable[int], submitted: Iterable[bytes]) -> None:
        self.genesis = genesis
        self.honest = frozenset(honest)
        self.submitted = frozenset(submitted)
        # block hash -> (sender, view) of every PRE-PREPARE that carried it; whether the sender led that
        # view is judged at the block's commit, against the leader schedule of the chain below it
        self.proposed: dict[bytes, set[tuple[int, int]]] = {}
        self.leaders = LeaderSchedule(genesis, reputation=genesis.params.leader_reputation == 1)  # of the agreed chain
        self.chain: dict[int, tuple[bytes, int]] = {0: (GENESIS_HASH, -1)}  # height -> (hash, first committer)
        self.committed_items: set[bytes] = set()
        self.state_roots: dict[int, bytes] = {}  # height -> the state root its agreed block claims
        self._certificates_checked: set[tuple[bytes, bytes]] = set()
        self._seen_pre_prepares: set[tuple[int, int, bytes]] = set()

    # -- Observer ------------------------------------------------------------------------------------
    def saw_sent(self, src: int, dst: int, message: Message) -> None:
        if type(message) is not PrePrepare or (src, message.view, message.block) in self._seen_pre_prepares:
            return
        self._seen_pre_prepares.add((src, message.view, message.block))
        with contextlib.suppress(ProtocolError):  # a malformed proposal is no proposal
            self.proposed.setdefault(Block.decode(message.block).hash, set()).add((src, message.view))

    def saw_commit(self, node: int, record: CommittedBlock) -> None:
        if node not in self.honest:
            return
        block = record.block
        agreed = self.chain.get(block.height)
        if agreed is not None:
            if agreed[0] != block.hash:
                raise InvariantViolation(
                    f"AGREEMENT: node {node} committed block {short(block.hash)} at height {block.height}, "
                    f"node {agreed[1]} committed {short(agreed[0])} there"
                )
        else:
            self._check_validity(node, record)
            self.chain[block.height] = (block.hash, node)
            self.leaders.advance(block)
            self.state_roots[block.height] = block.state_root
            self.committed_items.update([*block.proof_ids, *block.transfer_ids])
        self._check_certificate(node, record)

    # -- the checks ----------------------------------------------------------------------------------
    def _check_validity(self, node: int, record: CommittedBlock) -> None:
        block = record.block
        where = f"node {node} committed block {short(block.hash)} at height {block.height}"
        parent = self.chain.get(block.height - 1)
        if parent is None or parent[0] != block.prev_hash:
            raise InvariantViolation(f"VALIDITY: {where} that does not extend the agreed block at height {block.height - 1}")
        senders = self.proposed.get(block.hash, set())
        if not any(src == self.leaders.leader(view, block.height) for src, view in senders):
            raise InvariantViolation(f"VALIDITY: {where} that no leader proposed")
        leader = self.leaders.leader(block.view, block.height)
        if block.proposer != leader:
            raise InvariantViolation(f"VALIDITY: {where} naming proposer {block.proposer}; view {block.view}'s leader is {leader}")
        ids = [*block.proof_ids, *block.transfer_ids]
        if len(set(ids)) != len(ids):
            raise InvariantViolation(f"VALIDITY: {where} that lists {len(ids) - len(set(ids))} item(s) twice")
        unknown = [i for i in ids if i not in self.submitted]
        if unknown:
            raise InvariantViolation(f"VALIDITY: {where} with {len(unknown)} item(s) no client submitted")
        replayed = [i for i in ids if i in self.committed_items]
        if replayed:
            raise InvariantViolation(f"VALIDITY: {where} with {len(replayed)} item(s) committed at an earlier height")

    def _check_certificate(self, node: int, record: CommittedBlock) -> None:
        block = record.block
        key = (block.hash, record.certificate.encode())
        if key in self._certificates_checked:
            return
        genesis = self.genesis
        try:
            record.certificate.check(genesis, block.height, block.hash)
        except ConsensusError as err:
            raise InvariantViolation(f"CERTIFICATE: node {node} committed height {block.height} with a bad certificate: {err}") from None
        self._certificates_checked.add(key)

    def check_heads(self, hosts: Iterable[SimHost]) -> None:
        """Every honest ledger's head is the block the checker saw it commit at that height."""
        for host in hosts:
            if host.node_id in self.honest:
                agreed = self.chain.get(host.ledger.height)
                if agreed is None or agreed[0] != host.ledger.head_hash:
                    raise InvariantViolation(
                        f"HEAD: node {host.node_id} is at height {host.ledger.height} with head "
                        f"{short(host.ledger.head_hash)}, which no reported commit put there"
                    )

    def check_state_roots(self, hosts: Iterable[SimHost]) -> None:
        """Every honest ledger's state is the one its head block claims (a restart must rebuild it exactly)."""
        for host in hosts:
            claimed = self.state_roots.get(host.ledger.height)
            if host.node_id in self.honest and claimed is not None and host.ledger.state.root() != claimed:
                raise InvariantViolation(
                    f"STATE: node {host.node_id}'s state at height {host.ledger.height} has root "
                    f"{short(host.ledger.state.root())}, its block claims {short(claimed)}"
                )
