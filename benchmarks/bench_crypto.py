"""Micro-benchmarks of the crypto hot path: verify and sign per backend, and a proof's make and check.

Run: ``.venv/bin/python benchmarks/bench_crypto.py [pyperf options, e.g. --fast]``. pyperf runs each
benchmark in fresh worker processes (one core each); the parent prints the rates per core at the end.
The verify benchmarks reuse one owner key, as a validator does (owner keys repeat, parsed keys are cached).
"""

from __future__ import annotations

import time

import pyperf

from popbench import crypto
from popbench.genesis import ChainParams
from popbench.model.proof import Proof, check_proof

BACKENDS = ("coincurve", "ecdsa")
MESSAGE_COUNT = 64  # distinct messages cycled through, so no backend can cache a result
CHAIN_ID = bytes(range(32))
WORK_BITS = ChainParams().min_work_bits
KEY = crypto.derive_key("bench-crypto", 0)
MESSAGES = [b"bench message %d" % i for i in range(MESSAGE_COUNT)]


def bench_verify(loops: int, backend: crypto.Backend) -> float:
    signed = [(message, backend.sign(KEY.secret, message)) for message in MESSAGES]
    public_key, verify = KEY.public_key, backend.verify
    start = time.perf_counter()
    for index in range(loops):
        message, signature = signed[index % MESSAGE_COUNT]
        verify(public_key, message, signature)
    return time.perf_counter() - start


def bench_sign(loops: int, backend: crypto.Backend) -> float:
    secret, sign = KEY.secret, backend.sign
    start = time.perf_counter()
    for index in range(loops):
        sign(secret, MESSAGES[index % MESSAGE_COUNT])
    return time.perf_counter() - start


def bench_proof_create(loops: int) -> float:
    start = time.perf_counter()
    for index in range(loops):
        Proof.create(KEY, CHAIN_ID, index.to_bytes(8, "big"), WORK_BITS, 1, index)
    return time.perf_counter() - start


def bench_check_proof(loops: int) -> float:
    proofs = [Proof.create(KEY, CHAIN_ID, i.to_bytes(8, "big"), WORK_BITS, 1, i) for i in range(MESSAGE_COUNT)]
    start = time.perf_counter()
    for index in range(loops):
        check_proof(proofs[index % MESSAGE_COUNT], CHAIN_ID, WORK_BITS)
    return time.perf_counter() - start


def run_all(runner: pyperf.Runner) -> dict[str, pyperf.Benchmark | None]:
    results: dict[str, pyperf.Benchmark | None] = {}
    for name in BACKENDS:
        backend = crypto.get_backend(name)
        results[f"verify[{name}]"] = runner.bench_time_func(f"verify[{name}]", bench_verify, backend)
        results[f"sign[{name}]"] = runner.bench_time_func(f"sign[{name}]", bench_sign, backend)
    crypto.set_backend("coincurve")  # proofs as validators make and check them
    results[f"Proof.create[{WORK_BITS} bits]"] = runner.bench_time_func(f"Proof.create[{WORK_BITS} bits]", bench_proof_create)
    results["check_proof[coincurve]"] = runner.bench_time_func("check_proof[coincurve]", bench_check_proof)
    return results


def print_rates(results: dict[str, pyperf.Benchmark | None]) -> None:
    print("\nper core (one worker process, one thread):")
    for name, bench in results.items():
        if bench is not None:
            mean_s = bench.mean()
            print(f"  {name:<28} {1 / mean_s:>12,.0f} /s   ({mean_s * 1e6:,.1f} us each, +- {bench.stdev() * 1e6:,.1f} us)")


def main() -> None:
    runner = pyperf.Runner()
    runner.metadata["description"] = "popbench crypto: verify/sign per backend, proof create/check"
    args = runner.parse_args()
    results = run_all(runner)
    if not args.worker:
        print_rates(results)


if __name__ == "__main__":
    main()
