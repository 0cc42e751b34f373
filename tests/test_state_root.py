"""The incrementally kept state root equals the from-scratch Merkle root, block after block.

``State.root()`` rehashes only the accounts a block wrote, in a tree a copy shares with the state it was
copied from (popbench/pop/state.py, docs/consensus.md "The state root, block by block"). Every check
here compares it with ``merkle_root`` over every sorted account record, computed anew (the definition,
docs/protocol.md section 9): after random blocks of new and existing accounts, for copies that diverge,
for the view-change case of two blocks built on one state, and across a snapshot.
"""

from __future__ import annotations

import hashlib
import random

import pytest

from popbench.merkle import EMPTY_ROOT, MerkleTree, merkle_root
from popbench.model.hashing import address_of
from popbench.model.proof import Proof
from popbench.model.transfer import Transfer, TransferKind
from popbench.pop.state import ACCOUNT, RewardRules, State

CHAIN_ID = bytes(32)
RULES = RewardRules(reward_per_proof=3, block_reward=10, validator_reward=1)
KEYS = [b"\x02" + hashlib.sha256(b"test-state-root-%d" % i).digest() for i in range(40)]
ADDRESSES = [address_of(key) for key in KEYS]
VALIDATORS = ADDRESSES[:4]


def from_scratch(state: State) -> bytes:
    return merkle_root([ACCOUNT.pack(*row) for row in state.rows()])


def genesis(funded: int = 12) -> State:
    """Validators with stake and the first ``funded`` keys with balance (an odd count of accounts)."""
    return State.from_genesis(dict.fromkeys(ADDRESSES[:funded], 10_000), dict.fromkeys(VALIDATORS, 500))


class Blocks:
    """Random blocks: PAY and BOND from known keys, some to fresh addresses, some skipped, proof rewards."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.fresh = 0

    def recipient(self) -> bytes:
        if self.rng.random() < 0.3:
            self.fresh += 1
            return hashlib.sha256(b"fresh-%d-%d" % (self.seed, self.fresh)).digest()[:20]
        return self.rng.choice(ADDRESSES)

    def apply(self, state: State) -> None:
        transfers = []
        for _ in range(self.rng.randrange(0, 8)):
            sender = self.rng.randrange(len(KEYS))
            nonce = state.row(ADDRESSES[sender])[4] + (1 if self.rng.random() < 0.1 else 0)  # some skipped
            kind = TransferKind.BOND if self.rng.random() < 0.2 else TransferKind.PAY
            recipient = ADDRESSES[sender] if self.rng.random() < 0.1 else self.recipient()  # some pay themselves
            transfers.append(Transfer(CHAIN_ID, KEYS[sender], recipient, self.rng.randrange(0, 50), 1, nonce, kind))
        owners = [self.rng.choice(KEYS) if self.rng.random() < 0.7 else self.rng.randbytes(33) for _ in range(self.rng.randrange(0, 4))]
        proofs = [Proof(CHAIN_ID, owner, 0, 0, 0, b"") for owner in owners]
        state.apply_block(proofs, transfers, self.rng.choice(VALIDATORS), VALIDATORS, RULES)


# -- the tree itself ----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_a_tree_under_random_replacements_and_insertions_keeps_the_merkle_root(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(150):
        leaves = [rng.randbytes(rng.randrange(1, 9)) for _ in range(rng.randrange(0, 40))]
        tree = MerkleTree(leaves)
        assert tree.root() == merkle_root(leaves) and len(tree) == len(leaves)
        for _ in range(6):
            replaced = {i: rng.randbytes(5) for i in rng.sample(range(len(leaves)), min(len(leaves), rng.randrange(0, 4)))}
            inserted = sorted(
                ((rng.randrange(len(leaves) + 1), rng.randbytes(4)) for _ in range(rng.randrange(0, 4))), key=lambda pair: pair[0]
            )
            expected = [replaced.get(i, leaf) for i, leaf in enumerate(leaves)]
            for offset, (position, data) in enumerate(inserted):
                expected.insert(position + offset, data)
            tree.apply(replaced, inserted)
            leaves = expected
            assert tree.root() == merkle_root(leaves), (
                f"{len(leaves)} leaves after replacing {sorted(replaced)} inserting at {[p for p, _ in inserted]}"
            )


def test_a_tree_grows_from_nothing_one_leaf_at_a_time_and_its_copy_stays_behind() -> None:
    tree = MerkleTree()
    assert tree.root() == EMPTY_ROOT
    leaves: list[bytes] = []
    for i in range(33):
        before = tree.copy()
        tree.apply({}, [(len(leaves), b"%d" % i)])
        leaves.append(b"%d" % i)
        assert tree.root() == merkle_root(leaves) and before.root() == merkle_root(leaves[:-1])


def test_a_position_outside_the_tree_is_refused() -> None:
    tree = MerkleTree([b"a", b"b"])
    with pytest.raises(IndexError):
        tree.apply({2: b"c"})
    with pytest.raises(IndexError):
        tree.apply({}, [(3, b"c")])
    assert tree.root() == merkle_root([b"a", b"b"])


# -- the state ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_the_incremental_root_equals_the_full_one_after_every_block(seed: int) -> None:
    state, blocks = genesis(), Blocks(seed)
    state.root()
    for height in range(1, 121):
        state = state.copy()  # as the ledger does: each block on a copy of the committed state
        blocks.apply(state)
        assert state.root() == from_scratch(state), f"seed {seed}, height {height}, {len(state)} accounts"
    assert len(state) > len(genesis()) + 20, "the blocks created too few accounts to test insertion"


def test_several_blocks_between_roots_and_roots_between_writes_agree() -> None:
    state, blocks = genesis(), Blocks(10)
    state.root()
    for height in range(60):
        blocks.apply(state)
        if height % 3 == 0:  # a root only every third block: the written set spans blocks
            assert state.root() == from_scratch(state)


def test_a_copy_and_its_original_diverge_without_touching_each_other() -> None:
    parent, blocks = genesis(), Blocks(20)
    for _ in range(5):
        blocks.apply(parent)
    parent_root = parent.root()
    child = parent.copy()
    blocks.apply(child)
    assert child.root() == from_scratch(child) != parent_root  # the child took the tree over
    assert parent.root() == parent_root == from_scratch(parent)
    blocks.apply(parent)  # the parent writes after the child took the tree: it must not reuse it
    assert parent.root() == from_scratch(parent)
    blocks.apply(child)
    assert child.root() == from_scratch(child)


def test_two_blocks_built_on_one_state_each_get_their_own_root() -> None:
    """A view change: the next height is proposed twice on the same committed state; either may commit."""
    committed, blocks = genesis(), Blocks(30)
    for _ in range(10):
        blocks.apply(committed)
    committed.root()
    first, second = committed.copy(), committed.copy()
    blocks.apply(first)
    blocks.apply(second)
    first_root, second_root = first.root(), second.root()
    assert first_root == from_scratch(first) and second_root == from_scratch(second) and first_root != second_root
    third = committed.copy()  # a third proposal after both took the tree
    blocks.apply(third)
    assert third.root() == from_scratch(third)
    for state in (second, first):  # whichever commits goes on from its own root
        follower = state.copy()
        blocks.apply(follower)
        assert follower.root() == from_scratch(follower)


def test_a_copy_of_a_state_with_writes_not_yet_rooted_carries_them() -> None:
    state, blocks = genesis(), Blocks(40)
    state.root()
    blocks.apply(state)  # written, root not asked
    copied = state.copy()
    blocks.apply(copied)
    assert copied.root() == from_scratch(copied)
    assert state.root() == from_scratch(state)


@pytest.mark.parametrize("seed", range(3))
def test_a_snapshot_round_trip_keeps_the_root_and_the_chain_goes_on_alike(seed: int) -> None:
    state, blocks = genesis(), Blocks(seed + 50)
    for _ in range(30):
        state = state.copy()
        blocks.apply(state)
        state.root()
    restored = State.decode_snapshot(state.encode_snapshot())
    assert restored.root() == state.root() == from_scratch(state)
    twin = Blocks(seed + 60)
    blocks = Blocks(seed + 60)
    for height in range(20):
        state, restored = state.copy(), restored.copy()
        blocks.apply(state)
        twin.apply(restored)
        assert restored.rows() == state.rows(), f"height {height}"
        assert restored.root() == state.root() == from_scratch(state), f"height {height}"


def test_a_state_rooted_once_and_never_written_keeps_its_root() -> None:
    state = genesis()
    assert state.root() == state.copy().root() == from_scratch(state)
    assert State({}).root() == EMPTY_ROOT
