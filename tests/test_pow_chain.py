"""The PoW block, block tree and retarget rule, in memory: fork choice, reorgs, orphans, refusals."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from popbench import crypto
from popbench.errors import ProtocolError
from popbench.genesis import ChainParams
from popbench.mining import grind, meets_work
from popbench.model.hashing import address_of
from popbench.model.transfer import Transfer
from popbench.pow import retarget
from popbench.pow.block import PowBlock
from popbench.pow.chain import BlockTree, transfers_to_return
from popbench.pow.rules import MAX_FUTURE_DRIFT_MS, InvalidBlock, Rejection

CHAIN_ID = bytes(range(32))
NOW_MS = 1_700_000_000_000
BITS = 4
PARAMS = ChainParams(pow_initial_work_bits=BITS, pow_retarget_blocks=1000, pow_block_interval_ms=1000)
SENDER = crypto.derive_key("pow-chain-test", 0)
RECIPIENT = address_of(crypto.derive_key("pow-chain-test", 1).public_key)


def make_tree(params: ChainParams = PARAMS) -> BlockTree:
    return BlockTree(CHAIN_ID, params, clock_ms=lambda: NOW_MS)


def transfer(nonce: int) -> Transfer:
    return Transfer.create(SENDER, CHAIN_ID, RECIPIENT, 5, 1, nonce)


def mine(tree: BlockTree, parent: PowBlock, transfers: Sequence[Transfer] = (), miner: int = 0,
         timestamp_ms: int | None = None, bits: int | None = None) -> PowBlock:  # fmt: skip
    """A block on ``parent`` that meets its bits (the tree's expected bits unless ``bits`` is given)."""
    entry = tree.entry(parent.hash)
    assert entry is not None
    work_bits = tree.expected_bits(entry) if bits is None else bits
    stamp = parent.timestamp_ms + 1000 if timestamp_ms is None else timestamp_ms
    draft = PowBlock(parent.hash, parent.height + 1, stamp, work_bits, miner, [t.encode() for t in transfers])
    nonce = grind(draft.header_prefix(), work_bits)
    assert nonce is not None
    return draft.with_nonce(nonce)


def extend(tree: BlockTree, parent: PowBlock, count: int, miner: int = 0) -> list[PowBlock]:
    blocks = []
    for _ in range(count):
        parent = mine(tree, parent, miner=miner)
        tree.add(parent)
        blocks.append(parent)
    return blocks


def refusal(tree: BlockTree, block: PowBlock) -> Rejection:
    with pytest.raises(InvalidBlock) as caught:
        tree.add(block)
    return caught.value.reason


# -- the block -------------------------------------------------------------------------------------------
def test_a_block_round_trips_through_its_encoding_and_keeps_its_hash() -> None:
    tree = make_tree()
    block = mine(tree, tree.genesis.block, [transfer(0), transfer(1)], miner=7)
    decoded = PowBlock.decode(block.encode())
    assert decoded.hash == block.hash
    assert decoded.transfer_ids == [transfer(0).id, transfer(1).id]
    assert (decoded.miner, decoded.height, decoded.work) == (7, 1, 2**BITS)
    assert meets_work(decoded.hash, BITS)


@pytest.mark.parametrize("cut", [1, 50, 101, 105])
def test_a_truncated_block_is_a_protocol_error(cut: int) -> None:
    tree = make_tree()
    encoded = mine(tree, tree.genesis.block, [transfer(0)]).encode()
    with pytest.raises(ProtocolError):
        PowBlock.decode(encoded[:-cut])


def test_the_header_hash_covers_the_nonce_and_the_transfers() -> None:
    tree = make_tree()
    block = mine(tree, tree.genesis.block, [transfer(0)])
    assert block.with_nonce(block.nonce + 1).hash != block.hash
    other = PowBlock(block.prev_hash, 1, block.timestamp_ms, BITS, 0, [transfer(1).encode()], block.nonce)
    assert other.hash != block.hash


# -- fork choice and reorgs ------------------------------------------------------------------------------
def test_fork_choice_follows_the_branch_with_more_cumulative_work() -> None:
    tree = make_tree()
    short = extend(tree, tree.genesis.block, 2, miner=1)
    assert tree.tip.hash == short[-1].hash
    long = extend(tree, tree.genesis.block, 3, miner=2)
    assert tree.tip.hash == long[-1].hash
    assert tree.tip.total_work == 3 * 2**BITS
    assert tree.stale_blocks == 2


def test_on_equal_work_the_first_seen_tip_stays() -> None:
    tree = make_tree()
    first = extend(tree, tree.genesis.block, 1, miner=1)[0]
    second = mine(tree, tree.genesis.block, miner=2)
    result = tree.add(second)
    assert result.reorg is None
    assert tree.tip.hash == first.hash


def test_more_work_wins_over_more_blocks() -> None:
    params = replace(PARAMS, pow_retarget_blocks=2, pow_block_interval_ms=60_000)
    tree = make_tree(params)
    base = extend(tree, tree.genesis.block, 3)  # heights 1-3, 1 s apart: far faster than 60 s
    heavy = mine(tree, base[-1])  # height 4 retargets: +2 bits
    assert heavy.work_bits == BITS + 2
    tree.add(heavy)
    rival = mine(tree, base[1], timestamp_ms=base[0].timestamp_ms + 480_000, miner=9)  # a slow window
    tree.add(rival)
    for _ in range(2):
        rival = mine(tree, rival, miner=9)
        tree.add(rival)
    assert rival.work_bits == BITS - 2 and rival.height == heavy.height + 1
    assert tree.tip.hash == heavy.hash


def test_a_reorg_reports_detached_and_attached_blocks_and_its_depth() -> None:
    tree = make_tree()
    losing = extend(tree, tree.genesis.block, 2, miner=1)
    winning = extend(tree, tree.genesis.block, 2, miner=2)
    result = tree.add(mine(tree, winning[-1], miner=2))
    assert result.reorg is not None
    assert [b.hash for b in result.reorg.detached] == [b.hash for b in losing]
    assert [b.hash for b in result.reorg.attached] == [b.hash for b in winning] + [result.added[0].hash]
    assert result.reorg.depth == 2


def test_a_reorg_returns_detached_transfers_that_the_new_chain_lacks() -> None:
    tree = make_tree()
    only_losing, in_both = transfer(1), transfer(2)
    losing = mine(tree, tree.genesis.block, [only_losing, in_both], miner=1)
    tree.add(losing)
    assert tree.transfer_height(only_losing.id) == 1
    winning = mine(tree, tree.genesis.block, [in_both], miner=2)
    tree.add(winning)
    result = tree.add(mine(tree, winning, miner=2))
    assert result.reorg is not None
    assert [t.id for t in transfers_to_return(result.reorg)] == [only_losing.id]
    assert tree.transfer_height(only_losing.id) is None
    assert tree.transfer_height(in_both.id) == 1


def test_an_orphan_is_held_until_its_parent_arrives() -> None:
    tree = make_tree()
    builder = make_tree()
    parent, child = extend(builder, builder.genesis.block, 2)
    held = tree.add(child)
    assert held.missing_parent == parent.hash and tree.is_orphan(child.hash)
    result = tree.add(parent)
    assert [b.hash for b in result.added] == [parent.hash, child.hash]
    assert tree.tip.hash == child.hash and tree.orphans == 0


def test_a_locator_finds_the_fork_point_and_the_missing_blocks() -> None:
    tree, behind = make_tree(), make_tree()
    blocks = extend(tree, tree.genesis.block, 30)
    for block in blocks[:12]:
        behind.add(block)
    assert behind.locator()[0] == blocks[11].hash and behind.locator()[-1] == tree.genesis.hash
    sent = tree.main_chain_after(behind.locator(), 10)
    assert [b.height for b in sent] == list(range(13, 23))
    assert [b.height for b in tree.main_chain_after([bytes(32)], 3)] == [1, 2, 3]


# -- retargeting ---------------------------------------------------------------------------------------
def test_retarget_raises_bits_when_blocks_come_too_fast() -> None:
    assert retarget.retarget_bits(10, actual_ms=2_500, interval_blocks=10, target_interval_ms=1000) == 12
    assert retarget.retarget_bits(10, actual_ms=5_000, interval_blocks=10, target_interval_ms=1000) == 11
    assert retarget.retarget_bits(10, actual_ms=1, interval_blocks=10, target_interval_ms=1000) == 12  # clamped


def test_retarget_lowers_bits_when_blocks_come_too_slowly_but_never_below_one() -> None:
    assert retarget.retarget_bits(10, actual_ms=20_000, interval_blocks=10, target_interval_ms=1000) == 9
    assert retarget.retarget_bits(10, actual_ms=10**9, interval_blocks=10, target_interval_ms=1000) == 8  # clamped
    assert retarget.retarget_bits(2, actual_ms=10**9, interval_blocks=10, target_interval_ms=1000) == 1


def test_retarget_keeps_bits_on_target_and_between_retarget_heights() -> None:
    assert retarget.retarget_bits(10, actual_ms=10_000, interval_blocks=10, target_interval_ms=1000) == 10
    assert retarget.next_work_bits(15, 10, 1, 10, 1000) == 10
    assert [h for h in range(1, 41) if retarget.is_retarget_height(h, 10)] == [20, 30, 40]


def test_the_tree_applies_the_retarget_rule_from_block_timestamps() -> None:
    params = replace(PARAMS, pow_retarget_blocks=4, pow_block_interval_ms=1000)
    tree = make_tree(params)
    parent = tree.genesis.block
    for _ in range(7):  # heights 1..7, 4 s apart: four times too slow
        parent = mine(tree, parent, timestamp_ms=parent.timestamp_ms + 4000)
        tree.add(parent)
    slow = mine(tree, parent, timestamp_ms=parent.timestamp_ms + 4000)
    assert slow.work_bits == BITS - 2
    tree.add(slow)
    assert tree.tip.hash == slow.hash


# -- refusals --------------------------------------------------------------------------------------------
def test_blocks_that_break_a_header_rule_are_refused_with_their_reason() -> None:
    tree = make_tree()
    genesis = tree.genesis.block
    parent = extend(tree, genesis, 1)[0]
    wrong_height = PowBlock(parent.hash, 5, parent.timestamp_ms + 1, BITS, 0, [])
    cases = [
        (wrong_height.with_nonce(grind(wrong_height.header_prefix(), BITS) or 0), Rejection.BAD_HEIGHT),
        (mine(tree, parent, bits=BITS + 1), Rejection.BAD_WORK_BITS),
        (mine(tree, parent, timestamp_ms=parent.timestamp_ms - 1), Rejection.TIMESTAMP_BEFORE_PARENT),
        (mine(tree, parent, timestamp_ms=NOW_MS + MAX_FUTURE_DRIFT_MS + 1), Rejection.TIMESTAMP_IN_FUTURE),
    ]
    for block, reason in cases:
        assert refusal(tree, block) is reason
    assert tree.tip.hash == parent.hash and len(tree) == 2


def test_a_block_without_enough_work_is_refused() -> None:
    tree = make_tree(replace(PARAMS, pow_initial_work_bits=16))
    block = PowBlock(tree.genesis.hash, 1, 1, 16, 0, [])
    nonce = next(n for n in range(1000) if not meets_work(block.with_nonce(n).hash, 16))
    assert refusal(tree, block.with_nonce(nonce)) is Rejection.INSUFFICIENT_WORK


def test_blocks_with_bad_transfers_are_refused_with_their_reason() -> None:
    tree = make_tree()
    genesis = tree.genesis.block
    forged = Transfer.decode(transfer(1).encode())
    forged.signature = bytes([forged.signature[0] ^ 1]) + forged.signature[1:]
    honest_root = PowBlock(genesis.hash, 1, 1000, BITS, 0, [transfer(1).encode()]).transfers_root
    swapped = PowBlock(genesis.hash, 1, 1000, BITS, 0, [transfer(2).encode()], 0, honest_root)
    swapped = swapped.with_nonce(grind(swapped.header_prefix(), BITS) or 0)
    assert refusal(tree, mine(tree, genesis, [forged])) is Rejection.BAD_TRANSFER
    assert refusal(tree, mine(tree, genesis, [transfer(1), transfer(1)])) is Rejection.DUPLICATE_TRANSFER
    assert refusal(tree, mine(tree, genesis, [transfer(n) for n in range(PARAMS.batch_size + 1)])) is Rejection.TOO_MANY_TRANSFERS
    assert refusal(tree, swapped) is Rejection.BAD_TRANSFERS_ROOT
    assert len(tree) == 1


def test_a_transfer_may_not_repeat_on_one_branch_but_may_on_a_rival_branch() -> None:
    tree = make_tree()
    repeated = transfer(3)
    first = mine(tree, tree.genesis.block, [repeated], miner=1)
    tree.add(first)
    assert refusal(tree, mine(tree, first, [repeated])) is Rejection.DUPLICATE_TRANSFER
    rival = mine(tree, tree.genesis.block, [repeated], miner=2)
    assert tree.add(rival).added == [rival]
    assert refusal(tree, mine(tree, rival, [repeated], miner=2)) is Rejection.DUPLICATE_TRANSFER
