"""The in-node miner and the transfer pool, in one process: no sockets needed for what they do."""

from __future__ import annotations

import asyncio

import pytest

from popbench import crypto
from popbench.counters import NodeCounters
from popbench.genesis import ChainParams
from popbench.mempool import Mempool
from popbench.mining import meets_work
from popbench.model.hashing import address_of
from popbench.model.transfer import Transfer
from popbench.pow.block import PowBlock
from popbench.pow.chain import BlockTree, Reorg
from popbench.pow.miner import Miner
from popbench.pow.pool import TransferPool
from popbench.wire import RejectReason

CHAIN_ID = bytes(range(32))
SENDER = crypto.derive_key("pow-pool-test", 0)
RECIPIENT = address_of(crypto.derive_key("pow-pool-test", 1).public_key)
WAIT_S = 30.0


class RecordingHost:
    """Hands the miner templates at ``bits`` and records what it finds."""

    def __init__(self, bits: int | None) -> None:
        self.bits = bits
        self.templates = 0
        self.asked = asyncio.Event()  # set when the miner asks for a template
        self.found: asyncio.Queue[PowBlock] = asyncio.Queue()

    def block_template(self) -> PowBlock | None:
        self.templates += 1
        self.asked.set()
        return None if self.bits is None else PowBlock(CHAIN_ID, 1, 0, self.bits, 3, [])

    def block_mined(self, block: PowBlock) -> None:
        self.found.put_nowait(block)


def test_the_miner_finds_blocks_that_meet_their_bits_and_counts_its_hashes() -> None:
    async def scenario() -> None:
        host = RecordingHost(bits=10)
        miner = Miner(host, slice_nonces=256)
        miner.start()
        blocks = [await asyncio.wait_for(host.found.get(), WAIT_S) for _ in range(3)]
        miner.stop()
        assert all(meets_work(block.hash, 10) for block in blocks)
        assert miner.blocks_found >= 3 and miner.hashes >= sum(block.nonce + 1 for block in blocks[:1])
        assert miner.mining_s > 0 and miner.hash_rate > 0

    asyncio.run(scenario())


def test_the_loop_keeps_running_timers_while_every_slice_finds_a_block() -> None:
    async def scenario() -> None:
        host = RecordingHost(bits=1)
        miner = Miner(host)
        miner.start()
        await asyncio.sleep(0.02)  # the behaviour under test: a timer fires while the miner works
        assert miner.running and miner.blocks_found >= 1
        miner.stop()

    asyncio.run(scenario())


def test_the_miner_waits_without_hashing_while_the_node_asks_it_not_to_mine() -> None:
    async def scenario() -> None:
        host = RecordingHost(bits=None)
        miner = Miner(host)
        miner.start()
        await asyncio.wait_for(host.asked.wait(), WAIT_S)  # it asked, got None, and now waits for a wake-up
        assert miner.hashes == 0 and host.templates == 1
        host.bits = 8
        miner.tip_changed()
        block = await asyncio.wait_for(host.found.get(), WAIT_S)
        miner.stop()
        assert meets_work(block.hash, 8) and host.templates >= 2

    asyncio.run(scenario())


@pytest.fixture
def pool() -> TransferPool:
    tree = BlockTree(CHAIN_ID, ChainParams(pow_initial_work_bits=4))
    return TransferPool(Mempool(3), tree, CHAIN_ID, NodeCounters())


def transfer(nonce: int, chain_id: bytes = CHAIN_ID) -> Transfer:
    return Transfer.create(SENDER, chain_id, RECIPIENT, 5, 1, nonce)


def test_the_pool_admits_signed_transfers_once_and_refuses_the_rest_with_reasons(pool: TransferPool) -> None:
    forged = Transfer.decode(transfer(9).encode())
    forged.signature = bytes([forged.signature[0] ^ 1]) + forged.signature[1:]
    assert pool.admit(transfer(1).encode())[0] == RejectReason.ACCEPTED
    assert pool.admit(transfer(1).encode())[0] == RejectReason.REPLAY
    assert pool.admit(b"\x00" * 10)[0] == RejectReason.MALFORMED
    assert pool.admit(forged.encode())[0] == RejectReason.BAD_SIGNATURE
    assert pool.admit(transfer(2, bytes(32)).encode())[0] == RejectReason.WRONG_CHAIN
    assert pool.admit(transfer(3).encode())[0] == RejectReason.ACCEPTED
    assert pool.admit(transfer(4).encode())[0] == RejectReason.ACCEPTED
    assert pool.admit(transfer(5).encode())[0] == RejectReason.BUSY
    assert pool.counters.items_rejected == {"REPLAY": 1, "MALFORMED": 1, "BAD_SIGNATURE": 1, "WRONG_CHAIN": 1, "BUSY": 1}


def test_attached_blocks_empty_the_pool_and_returned_transfers_come_back(pool: TransferPool) -> None:
    moved = transfer(1)
    pool.admit(moved.encode())
    block = PowBlock(CHAIN_ID, 1, 0, 4, 0, [moved.encode()])
    pool.blocks_attached([block])
    assert moved.id not in pool
    pool.return_transfers([moved])
    assert moved.id in pool and pool.returned == 1
    assert Reorg([block], []).depth == 1
