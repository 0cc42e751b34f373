"""Micro benchmark of the PoP state root: what one block costs over 1,000 / 10,000 / 100,000 accounts.

A block here is what the ledger does per block (popbench/pop/ledger.py, ``_apply``): ``copy()`` the
state, ``apply_block`` 100 PAY transfers (unsigned: execution does not read signatures) plus the rewards
of 4 validators, then ``root()``. Two kinds of block: every transfer between existing accounts
("existing"), and every transfer paying a fresh address ("new accounts", so 100 accounts are created).
Each timing is the median of ``--repeats`` blocks applied one after another to the same chain. For
comparison it also times ``full``: the root computed from scratch over every account
(``merkle_root`` over ``rows()``, what ``State.root()`` did every block before the incremental tree),
and checks that the two agree after every block. ``--profile`` prints cProfile's top functions of the
largest size's blocks.

    .venv/bin/python benchmarks/bench_state_root.py [--sizes 1000 10000 100000] [--repeats 7] [--fast]
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import pstats
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import TypeVar

from popbench.merkle import merkle_root
from popbench.model.hashing import address_of
from popbench.model.transfer import Transfer
from popbench.pop.state import ACCOUNT, AccountTree, RewardRules, State

T = TypeVar("T")
TRANSFERS_PER_BLOCK = 100
VALIDATORS = 4
RULES = RewardRules(reward_per_proof=3, block_reward=10, validator_reward=1)
CHAIN_ID = bytes(32)


def public_key(i: int) -> bytes:
    return b"\x02" + hashlib.sha256(b"bench-account-%d" % i).digest()


class Chain:
    """A state of ``size`` funded accounts and a counter for each sender's nonce."""

    def __init__(self, size: int) -> None:
        self.keys = [public_key(i) for i in range(size)]
        self.addresses = [address_of(key) for key in self.keys]
        self.validators = self.addresses[:VALIDATORS]
        self.state = State.from_genesis(dict.fromkeys(self.addresses, 10**12), dict.fromkeys(self.validators, 1))
        self.nonces = [0] * size
        self.fresh = 0
        self.state.root()

    def transfers(self, height: int, new_accounts: bool) -> list[Transfer]:
        out = []
        for j in range(TRANSFERS_PER_BLOCK):
            sender = (height * 7919 + j * 104729) % len(self.keys)
            if new_accounts:
                self.fresh += 1
                recipient = hashlib.sha256(b"bench-fresh-%d" % self.fresh).digest()[:20]
            else:
                recipient = self.addresses[(sender * 31 + 17) % len(self.addresses)]
            out.append(Transfer(CHAIN_ID, self.keys[sender], recipient, 5, 1, self.nonces[sender]))
            self.nonces[sender] += 1
        return out

    def block(self, height: int, new_accounts: bool) -> tuple[State, dict[str, float]]:
        transfers = self.transfers(height, new_accounts)
        times: dict[str, float] = {}
        post = timed(times, "copy", self.state.copy)
        timed(times, "apply", lambda: post.apply_block([], transfers, self.validators[0], self.validators, RULES))
        root = timed(times, "root", post.root)
        times["block"] = times["copy"] + times["apply"] + times["root"]
        full = timed(times, "full", lambda: merkle_root([ACCOUNT.pack(*row) for row in post.rows()]))
        if root != full:
            raise SystemExit(f"the incremental root differs from the full one at height {height}")
        self.state = post
        return post, times


def timed(times: dict[str, float], name: str, call: Callable[[], T]) -> T:
    start = time.perf_counter()
    result = call()
    times[name] = time.perf_counter() - start
    return result


def run(size: int, repeats: int, new_accounts: bool, profile: bool) -> dict[str, float]:
    chain = Chain(size)
    samples: list[dict[str, float]] = []
    profiler = cProfile.Profile() if profile else None
    for height in range(1, repeats + 1):
        if profiler:
            profiler.enable()
        samples.append(chain.block(height, new_accounts)[1])
        if profiler:
            profiler.disable()
    if profiler:
        print(f"-- cProfile, {size} accounts, {'new accounts' if new_accounts else 'existing'}, {repeats} blocks")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(12)
    return {name: statistics.median(sample[name] for sample in samples) for name in samples[0]}


def tree_bytes_per_account(size: int) -> float:
    """What the tree (sorted addresses and every level's hashes) holds beyond the accounts themselves."""
    accounts = {address_of(public_key(i)): (10**12, 0, 0, 0) for i in range(size)}
    tracemalloc.start()
    tree = AccountTree(accounts)
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del tree
    return held / size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=7, help="blocks per size and kind (the median is shown)")
    parser.add_argument("--fast", action="store_true", help="3 blocks per size and kind")
    parser.add_argument("--profile", action="store_true", help="cProfile the largest size's blocks")
    args = parser.parse_args()
    repeats = 3 if args.fast else args.repeats
    print(f"{TRANSFERS_PER_BLOCK} PAY transfers + {VALIDATORS} validators' rewards per block; median of {repeats} blocks, ms")
    print(f"{'accounts':>9} {'block kind':<13} {'copy':>8} {'apply':>8} {'root':>8} {'block':>8} {'full root':>10} {'full/root':>10}")
    for size in args.sizes:
        for new_accounts in (False, True):
            result = run(size, repeats, new_accounts, args.profile and size == max(args.sizes))
            ms = {name: value * 1000 for name, value in result.items()}
            kind = "new accounts" if new_accounts else "existing"
            print(f"{size:>9,} {kind:<13} {ms['copy']:8.2f} {ms['apply']:8.2f} {ms['root']:8.2f} {ms['block']:8.2f} "
                  f"{ms['full']:10.2f} {ms['full'] / ms['root']:9.1f}x")  # fmt: skip
    print("tree memory, bytes per account: " + ", ".join(f"{size:,}: {tree_bytes_per_account(size):.1f}" for size in args.sizes))


if __name__ == "__main__":
    main()
