"""A hostile client: unique proofs with valid work and a bad signature, as fast as one process can.

Each proof is new (a counter in its payload), carries the work the chain asks for and a well-formed
signature made over other bytes, so a node cannot refuse it by a cheap check: it must verify the
signature (docs/faults.md, "A flood of bad signatures"). At most ``MAX_OUTSTANDING`` proofs are
unanswered at a time, so the flood measures the node, not this client's memory.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass

from popbench import crypto
from popbench.client import NodeClient
from popbench.mining import grind
from popbench.model.proof import Proof
from popbench.wire import ItemKind, RejectReason, SubmitResult

MAX_OUTSTANDING = 2000


@dataclass
class FloodResult:
    sent: int
    answered: dict[str, int]  # RejectReason name -> count
    duration_s: float

    @property
    def per_s(self) -> float:
        return self.sent / self.duration_s if self.duration_s else 0.0


def bad_proof(key: crypto.SigningKey, chain_id: bytes, counter: int, work_bits: int, wrong: bytes) -> bytes:
    """A unique proof whose work is valid and whose signature (``wrong``) is for other bytes."""
    proof = Proof(chain_id, key.public_key, work_bits, 0xF100D, time.time_ns(), counter.to_bytes(8, "big"))
    nonce = grind(proof.work_prefix(), work_bits)
    assert nonce is not None
    proof.nonce = nonce
    proof.signature = wrong
    return proof.encode()


async def flood(host: str, port: int, duration_s: float, work_bits: int) -> FloodResult:
    client = await NodeClient.connect(host, port)
    chain_id = client.identity.chain_id or bytes(32)  # adopted from the node's HELLO
    key = crypto.SigningKey.generate()
    wrong = key.sign(b"popbench flood: a signature over other bytes")
    answered: Counter[str] = Counter()
    room = asyncio.Event()
    outstanding = 0

    def on_result(result: SubmitResult) -> None:
        nonlocal outstanding
        outstanding -= 1
        answered[RejectReason(result.reason).name] += 1
        room.set()

    client.on_result = on_result
    began = time.monotonic()
    sent = 0
    try:
        while time.monotonic() - began < duration_s:
            if outstanding >= MAX_OUTSTANDING:
                room.clear()
                await asyncio.wait_for(room.wait(), timeout=5.0)
                continue
            client.submit(sent, ItemKind.PROOF, bad_proof(key, chain_id, sent, work_bits, wrong))
            sent += 1
            outstanding += 1
            if sent % 64 == 0:
                await asyncio.sleep(0)  # let answers in
    finally:
        client.close()
    return FloodResult(sent, dict(answered), time.monotonic() - began)
