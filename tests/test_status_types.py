"""The STATUS contract: both node kinds fill their typed status, one decoder reads either, reading changes nothing.

Nodes are built in-process (no sockets: building a status needs none); the wire round trip goes through the
same JSON object and frame a STATUS travels in.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import msgspec
import orjson
import pytest

from harness.procs.child import ChildContext
from popbench.counters import NodeCounters
from popbench.errors import ProtocolError
from popbench.genesis import ChainParams, make_genesis
from popbench.node_config import NodeConfig
from popbench.pop.node import Node
from popbench.pow.node import PowNode
from popbench.wire import FrameDecoder, Status, encode_frame
from popbench.wire.status import AnyStatus, CounterTotals, PopStatus, PowStatus, SeriesTally, Summary, decode_status, status_to_json_object

# the 19 fields the two hand-written dicts shared before the types existed: the wire keeps every one
SHARED_FIELDS = {
    "node_id", "role", "pid", "uptime_s", "height", "head_hash", "view", "leader", "peers", "peer_ids", "clients",
    "mempool", "crypto_backend", "round_time_s", "last_commit_ns", "proposals_refused", "blocks_fetched",
    "sync_failures", "counters",
}  # fmt: skip


def node_config(tmp_path: Path, consensus: str) -> NodeConfig:
    genesis, keys = make_genesis(4, seed="status-types", params=ChainParams(min_work_bits=4))
    return NodeConfig(node_id=0, genesis=genesis, key=keys[0], data_dir=tmp_path / consensus, consensus=consensus)


def built_status(tmp_path: Path, consensus: str) -> AnyStatus:
    async def build() -> AnyStatus:
        node = (PowNode if consensus == "pow" else Node)(node_config(tmp_path, consensus))
        try:
            return node.status()
        finally:
            node.store.close()

    return asyncio.run(build())


def over_the_wire(status: AnyStatus) -> AnyStatus:
    """Encode as a STATUS frame, decode the frame, decode its JSON object: what a client gets."""
    [message] = FrameDecoder().feed(encode_frame(Status(status_to_json_object(status))))
    assert isinstance(message, Status)
    return decode_status(message.payload)


def test_the_counter_totals_name_every_node_counter() -> None:
    assert set(CounterTotals.__struct_fields__) == set(NodeCounters.__slots__)


@pytest.mark.parametrize(("consensus", "kind"), [("pbft", PopStatus), ("pow", PowStatus)])
def test_each_node_kind_fills_its_status_and_a_client_decodes_the_same_type(tmp_path: Path, consensus: str, kind: type) -> None:
    status = built_status(tmp_path, consensus)
    assert type(status) is kind
    assert over_the_wire(status) == status
    payload = status_to_json_object(status)
    assert payload["consensus"] == consensus
    assert SHARED_FIELDS | {"consensus", "unexpected_exceptions"} <= set(payload)


def test_the_pow_status_keeps_its_section_and_the_fixed_fields_of_a_leaderless_chain(tmp_path: Path) -> None:
    status = built_status(tmp_path, "pow")
    assert isinstance(status, PowStatus)
    assert (status.view, status.leader, status.sync_failures) == (0, -1, 0)
    assert status.pow.height == status.height == 0 and status.pow.tip_hash == status.head_hash
    assert status.pow.total_work == int(status.pow.total_work_hex, 16) == 0  # genesis carries no work


def test_reading_a_pow_status_changes_nothing_in_the_node(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = PowNode(node_config(tmp_path, "pow"))
        node.miner.hashes = 12345  # as if it had ground
        before = node.counters.as_dict()
        first, second = node.status(), node.status()
        node.store.close()
        assert node.counters.as_dict() == before  # the hashes are reported, not written into the counters
        assert first.counters.hashes == second.counters.hashes == 12345
        assert isinstance(first, PowStatus) and first.pow.hashes == 12345

    asyncio.run(scenario())


def test_a_malformed_status_is_refused_with_the_field_named() -> None:
    good = status_to_json_object(PopStatus(
        node_id=1, role="validator", pid=1, uptime_s=1.0, height=2, head_hash="00", view=0, leader=1, peers=0,
        peer_ids=[], clients=0, mempool=0, crypto_backend="coincurve", round_time_s=Summary(), last_commit_ns=0,
        proposals_refused={}, blocks_fetched=0, sync_failures=0, counters=CounterTotals(),
    ))  # fmt: skip
    with pytest.raises(ProtocolError, match=r"\$\.height"):
        decode_status({**good, "height": "two"})
    with pytest.raises(ProtocolError, match="consensus"):
        decode_status({key: value for key, value in good.items() if key != "consensus"})
    with pytest.raises(ProtocolError, match="pow"):
        decode_status({**good, "consensus": "pow"})  # a PoW status without its section
    assert decode_status({**good, "from_a_newer_node": 1}) == msgspec.convert(good, PopStatus)  # unknown fields pass


def test_a_node_child_reports_its_final_status_as_json_the_supervisor_decodes(tmp_path: Path) -> None:
    status = built_status(tmp_path, "pow")
    read_end, write_end = os.pipe()
    try:
        ChildContext("node-0", write_end, None, {}).report("final", status=status)
        event = orjson.loads(os.read(read_end, 1 << 20))
    finally:
        os.close(read_end)
        os.close(write_end)
    assert event["event"] == "final" and decode_status(event["status"]) == status


def test_a_series_tally_summarises_what_it_was_given_in_constant_memory() -> None:
    tally = SeriesTally()
    assert tally.summary() == Summary()
    values = [0.25, 3.5, -1.0, 2.0] * 1000
    for value in values:
        tally.add(value)
    assert tally.summary() == Summary(len(values), sum(values), max(values))
    assert not hasattr(tally, "__dict__")  # three numbers, however long the chain: nothing grows with it
    negative = SeriesTally()
    negative.add(-2.0)
    assert negative.summary().max == -2.0  # the first value is the max, not 0


def test_the_status_reads_the_nodes_tallies(tmp_path: Path) -> None:
    async def committed_twice() -> PopStatus:
        node = Node(node_config(tmp_path, "pbft"))
        try:
            node.round_times.add(0.5)
            node.round_times.add(1.5)
            node.last_commit_ns = 123
            status = node.status()
            assert isinstance(status, PopStatus)
            return status
        finally:
            node.store.close()

    status = asyncio.run(committed_twice())
    assert status.round_time_s == Summary(2, 2.0, 1.5)
    assert status.last_commit_ns == 123
