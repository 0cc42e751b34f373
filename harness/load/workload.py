"""What the load drivers send: a schedule of send times and the proofs, all made before the window.

Open loop: send offsets follow the profile's shape at an AGGREGATE rate across all drivers; driver d of
D takes every D-th slot, so the drivers together produce exactly the profile's rate. Each proof signs
its own scheduled send time (``submitted_ns``), so latency read from chain data is measured from the
schedule: a generator that falls behind cannot hide the queueing it caused.
"""

from __future__ import annotations

import enum
import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

from harness.kinds import LoadShape
from popbench import crypto
from popbench.mining import meets_work
from popbench.model.proof import Proof
from popbench.model.transfer import Transfer

RUN_TAG_BITS = 32
OWNER_KEYS_PER_DRIVER = 16  # proof owners per driver: enough accounts that rewards spread


class Expect(enum.IntEnum):
    """What the network must do with a planned item."""

    COMMIT = 0
    BAD_SIGNATURE = 1
    LOW_WORK = 2
    REPLAY = 3


@dataclass(frozen=True)
class Planned:
    """One item a driver will send: when (ns after the window starts), what, and what must happen."""

    offset_ns: int
    raw: bytes
    proof_id: bytes
    expect: Expect


def schedule_offsets(shape: LoadShape, rate: float, duration_s: float, ramp_from: float = 0.0,
                     steps: Sequence[float] = ()) -> list[int]:  # fmt: skip
    """Send offsets (ns) of every slot of the aggregate schedule, in order."""
    if shape is LoadShape.CONSTANT:
        return _constant(rate, 0.0, duration_s)
    if shape is LoadShape.RAMP:
        return _ramp(ramp_from, rate, duration_s)
    return _steps(list(steps) or [rate], duration_s)


def _constant(rate: float, start_s: float, duration_s: float) -> list[int]:
    count = int(rate * duration_s)
    return [int((start_s + i / rate) * 1e9) for i in range(count)] if rate > 0 else []


def _ramp(rate_from: float, rate_to: float, duration_s: float) -> list[int]:
    # Integrate the linearly rising rate: slot k is sent when the cumulative count reaches k.
    offsets: list[int] = []
    t, dt = 0.0, 0.0005
    owed = 0.0
    while t < duration_s:
        owed += (rate_from + (rate_to - rate_from) * t / duration_s) * dt
        while owed >= 1.0:
            offsets.append(int(t * 1e9))
            owed -= 1.0
        t += dt
    return offsets


def _steps(rates: list[float], duration_s: float) -> list[int]:
    span = duration_s / len(rates)
    offsets: list[int] = []
    for index, rate in enumerate(rates):
        offsets.extend(_constant(rate, index * span, span))
    return offsets


def driver_slots(offsets: list[int], driver: int, drivers: int) -> list[int]:
    return offsets[driver::drivers]


def owner_keys(seed: int, driver: int) -> list[crypto.SigningKey]:
    return [crypto.derive_key(f"popbench-owner-{seed}-{driver}", i) for i in range(OWNER_KEYS_PER_DRIVER)]


def make_plan(
    slots: list[int], start_ns: int, chain_id: bytes, keys: list[crypto.SigningKey], work_bits: int,
    payload_bytes: int, run_tag: int, invalid_fraction: float, invalid_kinds: Sequence[Expect], seed: int,
) -> list[Planned]:  # fmt: skip
    """Grind and sign one proof per slot; a seeded fraction become the requested invalid kinds."""
    rng = random.Random(seed)
    plan: list[Planned] = []
    sent_valid: list[Planned] = []
    for index, offset in enumerate(slots):
        expect = rng.choice(list(invalid_kinds)) if invalid_kinds and rng.random() < invalid_fraction else Expect.COMMIT
        if expect is Expect.REPLAY and not sent_valid:
            expect = Expect.COMMIT
        if expect is Expect.REPLAY:
            original = rng.choice(sent_valid)
            plan.append(Planned(offset, original.raw, original.proof_id, Expect.REPLAY))
            continue
        payload = index.to_bytes(8, "big") + rng.randbytes(max(0, payload_bytes - 8))
        proof = _make_proof(keys[index % len(keys)], chain_id, payload, work_bits, run_tag, start_ns + offset, expect)
        entry = Planned(offset, proof.encode(), proof.id, expect)
        plan.append(entry)
        if expect is Expect.COMMIT:
            sent_valid.append(entry)
    return plan


def _make_proof(key: crypto.SigningKey, chain_id: bytes, payload: bytes, work_bits: int, run_tag: int,
                submitted_ns: int, expect: Expect) -> Proof:  # fmt: skip
    proof = Proof.create(key, chain_id, payload, work_bits, run_tag, submitted_ns)
    if expect is Expect.BAD_SIGNATURE:
        proof.signature = _corrupt(proof.signature)
    elif expect is Expect.LOW_WORK:
        proof = _without_work(key, proof)
    return proof


def _corrupt(signature: bytes) -> bytes:
    # Flip a bit of r: still a well-formed 64-byte signature, but not one that verifies.
    return bytes([signature[0] ^ 0x01]) + signature[1:]


def _without_work(key: crypto.SigningKey, proof: Proof) -> Proof:
    """The same claim with a nonce whose digest misses the target, properly signed."""
    prefix = proof.work_prefix()
    nonce = 0
    while meets_work(_digest(prefix, nonce), proof.work_bits):
        nonce += 1
    proof.nonce = nonce
    proof.sign(key)
    return proof


def _digest(prefix: bytes, nonce: int) -> bytes:
    return hashlib.sha256(prefix + nonce.to_bytes(8, "big")).digest()


def make_transfer_plan(slots: list[int], chain_id: bytes, keys: list[crypto.SigningKey], seed: int) -> list[Planned]:
    """PoW load: one signed PAY transfer per slot (the Antimony chain orders transfers; it does not
    execute balances, docs/pow.md), each with a fresh account nonce so no two are the same item."""
    rng = random.Random(seed)
    plan = []
    for index, offset in enumerate(slots):
        key = keys[index % len(keys)]
        transfer = Transfer.create(key, chain_id, rng.randbytes(20), 1, 1, index // len(keys))
        plan.append(Planned(offset, transfer.encode(), transfer.id, Expect.COMMIT))
    return plan
