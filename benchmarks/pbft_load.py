"""The load side of bench_pbft.py: pre-signed proofs, flow-controlled submitters and commit timing.

- :func:`presign_proofs` makes every proof before the clock starts, on every core, so signing and
  grinding never compete with the validators during the measured window.
- :class:`Submitter` keeps a bounded number of proofs in flight on one client connection: enough to keep
  the leaders' batches full (saturation) without filling the mempools (which would only answer BUSY).
- :class:`CommitTracker` timestamps the first COMMITTED notice naming each proof, on any connection.
"""

from __future__ import annotations

import os
import time
from collections import Counter, deque
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from popbench import crypto
from popbench.client import NodeClient
from popbench.model.proof import Proof
from popbench.wire import Committed, ItemKind, RejectReason, SubmitResult

OWNER_COUNT = 16  # distinct proof owners; validators cache parsed keys, as for real repeat users
CHUNK_PROOFS = 2000  # proofs per pre-signing task
RUN_TAG = 42

SignedProof = tuple[bytes, bytes]  # (id, encoded)


def _sign_chunk(chain_id: bytes, work_bits: int, start: int, count: int) -> list[SignedProof]:
    owners = [crypto.derive_key("bench-pbft-owner", index) for index in range(OWNER_COUNT)]
    signed = []
    for index in range(start, start + count):
        proof = Proof.create(owners[index % OWNER_COUNT], chain_id, index.to_bytes(8, "big"), work_bits, RUN_TAG, time.time_ns())
        signed.append((proof.id, proof.encode()))
    return signed


def presign_proofs(chain_id: bytes, work_bits: int, count: int) -> list[SignedProof]:
    """``count`` valid, distinct proofs for ``chain_id``, made in parallel on every core."""
    tasks = [(chain_id, work_bits, start, min(CHUNK_PROOFS, count - start)) for start in range(0, count, CHUNK_PROOFS)]
    pool = ProcessPoolExecutor(max_workers=os.cpu_count() or 1)
    try:
        chunks = list(pool.map(_sign_chunk, *zip(*tasks, strict=True)))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on Ctrl-C, drop the chunks not yet started
    return [proof for chunk in chunks for proof in chunk]


@dataclass
class CommitTracker:
    """When each submitted proof was sent and first seen committed (``time.perf_counter`` seconds)."""

    sent_s: dict[bytes, float] = field(default_factory=dict)
    committed: list[tuple[float, float]] = field(default_factory=list)  # (commit seen at, latency)
    owners: dict[bytes, Submitter] = field(default_factory=dict)
    submitters: list[Submitter] = field(default_factory=list)

    def sent(self, proof_id: bytes, submitter: Submitter) -> None:
        self.sent_s[proof_id] = time.perf_counter()
        self.owners[proof_id] = submitter

    def on_committed(self, note: Committed) -> None:
        now = time.perf_counter()
        for proof_id in note.proof_ids:
            sent = self.sent_s.pop(proof_id, None)
            if sent is not None:  # the first notice of this proof; later ones are other nodes'
                self.committed.append((now, now - sent))
                self.owners.pop(proof_id).landed()
        for submitter in self.submitters:
            submitter.pump()

    def in_window(self, start_s: float, end_s: float) -> list[float]:
        """Latencies of the proofs whose commit was seen in ``[start_s, end_s)``."""
        return [latency for seen, latency in self.committed if start_s <= seen < end_s]


class Submitter:
    """Feeds one node from a queue of pre-signed proofs, at most ``max_in_flight`` uncommitted at a time."""

    def __init__(self, client: NodeClient, proofs: Iterable[SignedProof], tracker: CommitTracker, max_in_flight: int) -> None:
        self.client = client
        self.queue: deque[SignedProof] = deque(proofs)
        self.tracker = tracker
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.next_request_id = 0
        self.results: Counter[str] = Counter()
        self.ran_dry_at_s: float | None = None
        client.on_result = self.on_result
        client.on_committed = tracker.on_committed
        tracker.submitters.append(self)

    def pump(self) -> None:
        while self.in_flight < self.max_in_flight and self.queue:
            proof_id, encoded = self.queue.popleft()
            self.tracker.sent(proof_id, self)
            self.client.submit(self.next_request_id, ItemKind.PROOF, encoded)
            self.next_request_id += 1
            self.in_flight += 1
        if not self.queue and self.ran_dry_at_s is None:
            self.ran_dry_at_s = time.perf_counter()

    def landed(self) -> None:
        self.in_flight -= 1

    def on_result(self, result: SubmitResult) -> None:
        reason = RejectReason(result.reason)
        self.results[reason.name] += 1
        if reason != RejectReason.ACCEPTED:
            # refused: it will never commit, so it no longer counts as in flight
            self.tracker.sent_s.pop(result.item_id, None)
            if self.tracker.owners.pop(result.item_id, None) is not None:
                self.landed()
            self.pump()
