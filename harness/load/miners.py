"""A PoP miner: one forked process that grinds real proof-of-work proofs and submits what it finds.

This is the "mining load" beside the drivers' pre-signed proofs: each proof is ground live at the
profile's ``miners.work_bits`` with the sha256 midstate grinder, signed, and submitted to a node. The
miner grinds in slices so its event loop still hears answers and commit notices between slices. It
counts every hash and the CPU seconds it spent, so the report can put its hash rate beside the
calibrated raw rate of a core (hash-rate efficiency, docs/metrics.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.host.cputime import own_cpu_s
from popbench import crypto
from popbench.client import NodeClient
from popbench.errors import ClientError
from popbench.mining import grind
from popbench.model.proof import Proof
from popbench.wire import TOPIC_COMMITS, Committed, ItemKind, RejectReason, SubmitResult

SLICE_NONCES = 20_000  # ~10-20 ms of grinding between looks at the network
PROGRESS_EVERY_S = 1.0
MINER_PAYLOAD_BYTES = 12  # miner index u32 + counter u64
Address = tuple[str, int]
Report = Callable[[str, dict[str, Any]], None]


@dataclass
class MinerSpec:
    index: int
    nodes: list[Address]
    chain_id: bytes
    work_bits: int
    run_tag: int
    seed: int


class Miner:
    """Grinds, signs and submits proofs until stopped; tracks hashes, finds, admissions and commits."""

    def __init__(self, spec: MinerSpec) -> None:
        self.spec = spec
        self.key = crypto.derive_key(f"miner-{spec.seed}", spec.index)
        self.client: NodeClient | None = None
        self.hashes = 0
        self.found = 0
        self.accepted = 0
        self.rejected = 0
        self.committed = 0
        self.latencies_ns: list[int] = []
        self._sent_at: dict[bytes, int] = {}
        self._counter = 0
        self._submitted: dict[int, bytes] = {}  # request id -> proof id, until its answer
        self.accepted_ids: list[bytes] = []  # what the node acknowledged: the run's accounting judges each

    async def connect(self) -> None:
        node = self.spec.nodes[self.spec.index % len(self.spec.nodes)]
        self.client = await NodeClient.connect(*node, chain_id=self.spec.chain_id)
        self.client.on_result = self._on_result
        self.client.on_committed = self._on_committed
        self.client.subscribe(TOPIC_COMMITS)

    async def mine(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            proof = self._next_proof()
            nonce = await self._grind(proof, stop)
            if nonce is None:
                return
            proof.nonce = nonce
            proof.sign(self.key)
            self._submit(proof)

    def _next_proof(self) -> Proof:
        self._counter += 1
        payload = self.spec.index.to_bytes(4, "big") + self._counter.to_bytes(8, "big")  # MINER_PAYLOAD_BYTES
        return Proof(self.spec.chain_id, self.key.public_key, self.spec.work_bits, self.spec.run_tag, time.time_ns(), payload)

    async def _grind(self, proof: Proof, stop: asyncio.Event) -> int | None:
        prefix, start = proof.work_prefix(), 0
        while not stop.is_set():
            nonce = grind(prefix, self.spec.work_bits, start, SLICE_NONCES)
            if nonce is not None:
                self.hashes += nonce - start + 1
                return nonce
            self.hashes += SLICE_NONCES
            start += SLICE_NONCES
            await asyncio.sleep(0)  # let answers and commit notices in between slices
        return None

    def _submit(self, proof: Proof) -> None:
        assert self.client is not None
        self.found += 1
        self._sent_at[proof.id] = time.time_ns()
        self._submitted[self.found] = proof.id
        try:
            self.client.submit(self.found, ItemKind.PROOF, proof.encode())
        except ClientError:
            self.rejected += 1

    def _on_result(self, result: SubmitResult) -> None:
        proof_id = self._submitted.pop(result.request_id, None)
        if result.reason == RejectReason.ACCEPTED:
            self.accepted += 1
            if proof_id is not None:
                self.accepted_ids.append(proof_id)
        else:
            self.rejected += 1

    def _on_committed(self, note: Committed) -> None:
        seen = time.time_ns()
        for proof_id in note.proof_ids:
            sent = self._sent_at.pop(proof_id, None)
            if sent is not None:
                self.committed += 1
                self.latencies_ns.append(seen - sent)

    def summary(self, wall_s: float) -> dict[str, Any]:
        cpu_s = own_cpu_s()
        return {"miner": self.spec.index, "hashes": self.hashes, "wall_s": wall_s, "cpu_s": cpu_s,
                "hashes_per_s": self.hashes / wall_s if wall_s > 0 else 0.0,
                "hashes_per_cpu_s": self.hashes / cpu_s if cpu_s > 0 else 0.0,
                "found": self.found, "accepted": self.accepted, "rejected": self.rejected, "committed": self.committed,
                "commit_latency_ms": sorted(v / 1e6 for v in self.latencies_ns),
                "accepted_ids": [proof_id.hex() for proof_id in self.accepted_ids]}  # fmt: skip


async def run_miner(spec: MinerSpec, report: Report, stop: asyncio.Event, go: asyncio.Future[int]) -> dict[str, Any]:
    """Wait for the go, connect, mine until ``stop``; return the summary."""
    miner = Miner(spec)
    waiters: set[asyncio.Future[Any]] = {go, asyncio.ensure_future(stop.wait())}
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if not go.done():
        return miner.summary(0.0)
    await miner.connect()
    began = time.perf_counter()
    progress = asyncio.ensure_future(_progress(miner, report))
    try:
        await miner.mine(stop)
    finally:
        progress.cancel()
        if miner.client is not None:
            miner.client.close()
    return miner.summary(time.perf_counter() - began)


async def _progress(miner: Miner, report: Report) -> None:
    while True:
        await asyncio.sleep(PROGRESS_EVERY_S)  # the progress period, not a synchronisation
        report("progress", {"hashes": miner.hashes, "found": miner.found, "committed": miner.committed})
