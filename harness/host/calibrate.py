"""Calibration: what this host can do per core, so scores mean the same on a laptop and a server.

Measured at the start of every run, in the supervisor before anything is forked (nothing else of the
run is running yet): secp256k1 verifications per second and sha256 midstate hashes per second, on one
core, each the best of three 0.2 s trials.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from popbench import crypto
from popbench.mining import grind

TRIAL_S = 0.2
TRIALS = 3  # the best trial counts: interference only ever slows a trial down (pyperf's reasoning)
HASH_SLICE = 20_000


@dataclass(frozen=True)
class Calibration:
    verifies_per_s_per_core: float
    hashes_per_s_per_core: float
    cores: int
    crypto_backend: str
    duration_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def best_of_trials(trial: Callable[[float], float], seconds: float = TRIAL_S, trials: int = TRIALS) -> float:
    return max(trial(seconds) for _ in range(trials))


def measure_verifies(seconds: float = TRIAL_S) -> float:
    key = crypto.derive_key("calibration", 0)
    message = b"popbench calibration" * 8
    signature = key.sign(message)
    done, began = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - began) < seconds:
        for _ in range(200):
            crypto.verify(key.public_key, message, signature)
        done += 200
    return done / elapsed


def measure_hashes(prefix_bytes: int, seconds: float = TRIAL_S) -> float:
    """Midstate hashes/s over a prefix as long as the one the run's miners grind: the cost of a hash
    depends on how many 64-byte blocks follow the midstate."""
    prefix = b"popbench calibration prefix".ljust(prefix_bytes, b".")
    done, began, nonce = 0, time.perf_counter(), 0
    while (elapsed := time.perf_counter() - began) < seconds:
        grind(prefix, 255, nonce, HASH_SLICE)  # 255 bits of work never succeeds: every nonce is hashed
        done += HASH_SLICE
        nonce += HASH_SLICE
    return done / elapsed


def calibrate(cores: int, hash_prefix_bytes: int) -> Calibration:
    began = time.perf_counter()
    verifies = best_of_trials(measure_verifies)
    hashes = best_of_trials(lambda seconds: measure_hashes(hash_prefix_bytes, seconds))
    return Calibration(verifies, hashes, cores, crypto.backend_name(), time.perf_counter() - began)


def pop_ceiling(calibration: Calibration, nodes: int) -> float:
    """Proofs/s a network can commit at most when every node verifies every proof: cores / (N x verify time)."""
    return calibration.cores * calibration.verifies_per_s_per_core / nodes
