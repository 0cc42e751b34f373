"""ROUTED (docs/protocol.md, section 15.3): the envelope, the next-hop tables, the destination's checks.

The tables are checked on the graphs the harness draws: from every node to every other, following each
node's own table ends at the destination in exactly the graph distance. The destination's checks each
come with the case that must be refused: a forged signature, an envelope re-addressed to another node,
an unknown origin, the node's own envelope back, a type that may not be routed, signed garbage.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.host.topology import k_regular
from harness.metrics.network import distances_from
from popbench.counters import NodeCounters
from popbench.errors import ProtocolError
from popbench.pop.forwarding import LeaderForwarding
from popbench.pop.routing import MeshRoutes, first_hops, routed_signed_bytes
from popbench.wire import CommitShare, Gossip, ItemKind, Routed, Submit, decode_message
from tests.test_mesh import CERTIFICATE, CHAIN, KEYS, PUBLIC  # the keys, chain and inner message of section 15.5's vectors

SPEC = Path(__file__).parent.parent / "docs" / "protocol.md"
LINE = {0: frozenset({1}), 1: frozenset({0, 2}), 2: frozenset({1})}  # 0 - 1 - 2


def _routes(node: int) -> MeshRoutes:
    return MeshRoutes(node, KEYS[node], CHAIN, PUBLIC, LINE, NodeCounters())


def _envelope(frame: bytes) -> Routed:
    message = decode_message(frame[4], frame[5:])
    assert isinstance(message, Routed)
    return message


def test_the_routed_envelope_of_the_spec_vector_is_what_the_spec_prints() -> None:
    frame = _routes(0).wrap(2, CERTIFICATE)
    envelope = _envelope(frame)
    spec = SPEC.read_text(encoding="utf-8")
    signed = routed_signed_bytes(CHAIN, 2, 27, CERTIFICATE.encode_body())
    assert len(signed) == 205 and signed.startswith(b"popbench/routed/v1/" + CHAIN + b"\x00\x00\x00\x02\x1b")
    assert envelope.signature.hex() in spec  # RFC 6979 nonces: the signature is fixed
    assert frame[:13].hex() == "000000de260000000200000000" and frame[:13].hex() in spec
    assert len(frame) == 227 and (envelope.destination, envelope.origin) == (2, 0)
    assert decode_message(envelope.inner_type, envelope.inner) == CERTIFICATE


@pytest.mark.parametrize(("n", "degree", "seed"), [(12, 4, 1), (100, 8, 7), (300, 8, 1000)])
def test_every_route_ends_at_its_destination_in_the_graph_distance(n: int, degree: int, seed: int) -> None:
    topology = k_regular(n, degree, seed)
    graph = topology.graph()
    tables = {node: first_hops(graph, node) for node in range(n)}
    for source in range(0, n, max(1, n // 25)):
        distance = distances_from(source, graph)
        for destination in range(n):
            if destination == source:
                continue
            node, hops = source, 0
            while node != destination:
                node = tables[node][destination]
                hops += 1
                assert hops <= n, f"a loop from {source} to {destination}"
            assert hops == distance[destination], (source, destination, hops, distance[destination])


def test_a_node_the_graph_cannot_reach_has_no_next_hop() -> None:
    graph = {0: frozenset({1}), 1: frozenset({0}), 2: frozenset()}
    assert first_hops(graph, 0) == {1: 1}
    assert MeshRoutes(0, KEYS[0], CHAIN, PUBLIC, graph, NodeCounters()).next_hop(2) is None


def test_a_relay_passes_an_envelope_to_the_neighbour_nearer_its_destination() -> None:
    assert _routes(0).next_hop(2) == 1 and _routes(2).next_hop(0) == 1 and _routes(1).next_hop(2) == 2


def test_the_destination_delivers_a_correctly_signed_envelope_as_from_its_origin() -> None:
    share = CommitShare(0, 1, b"\xbb" * 32, 0, b"\x11" * 96)
    receiver = _routes(2)
    envelope = _envelope(_routes(0).wrap(2, share))
    assert receiver.receive(envelope) == share and envelope.origin == 0
    assert receiver.receive(envelope) == share  # a replay is the origin's own share again: the engine ignores it
    assert receiver.counters.protocol_errors == 0 and receiver.counters.signature_verifications == 2


@pytest.mark.parametrize("case", ["forged signature", "re-addressed", "unknown origin", "own envelope", "not routable", "garbage"])
def test_an_envelope_that_must_not_be_believed_is_refused_and_counted(case: str) -> None:
    receiver = _routes(2)
    good = _envelope(_routes(0).wrap(2, CERTIFICATE))
    body = Gossip(ItemKind.PROOF, []).encode_body()
    bad = {
        "forged signature": lambda: Routed(2, 0, bytes(64), good.inner_type, good.inner),
        "re-addressed": lambda: Routed(2, 0, _envelope(_routes(0).wrap(1, CERTIFICATE)).signature, 27, good.inner),
        "unknown origin": lambda: Routed(2, 7, good.signature, good.inner_type, good.inner),
        "own envelope": lambda: _envelope(_routes(2).wrap(2, CERTIFICATE)),
        "not routable": lambda: Routed(2, 0, KEYS[0].sign(routed_signed_bytes(CHAIN, 2, Submit.TYPE, body)), Submit.TYPE, body),
        "garbage": lambda: Routed(2, 0, KEYS[0].sign(routed_signed_bytes(CHAIN, 2, 27, b"\x01")), 27, b"\x01"),
    }[case]()
    assert receiver.receive(bad) is None
    assert receiver.counters.protocol_errors == 1
    assert receiver.receive(good) == CERTIFICATE  # the genuine envelope is still believed


def test_a_routed_body_shorter_than_its_head_does_not_decode() -> None:
    with pytest.raises(ProtocolError, match="Routed body must be at least 73 bytes"):
        decode_message(Routed.TYPE, b"\x00" * 20)


# -- items to the coming leaders (popbench/pop/forwarding.py) ---------------------------------------------


class _Sent:
    def __init__(self) -> None:
        self.frames: list[tuple[int, Gossip]] = []
        self.leaders = [5, 6]

    def send(self, node: int, message: Gossip) -> None:
        self.frames.append((node, message))

    def items_to(self, node: int) -> list[bytes]:
        return [raw for to, message in self.frames if to == node for raw in message.items]


def test_a_submitted_item_goes_to_each_coming_leader_once_and_again_at_each_commit_until_it_commits() -> None:
    sent = _Sent()
    forwarding = LeaderForwarding(sent.send, lambda: sent.leaders, limit=10)
    forwarding.submitted(ItemKind.PROOF, b"id-a", b"raw-a")
    forwarding.submitted(ItemKind.TRANSFER, b"id-b", b"raw-b")
    assert sent.items_to(5) == sent.items_to(6) == [b"raw-a", b"raw-b"]
    sent.frames.clear()
    sent.leaders = [6, 7]  # a block committed: the schedule moved on by one
    forwarding.committed([b"id-a"])
    forwarding.resend()
    assert sent.items_to(6) == sent.items_to(7) == [b"raw-b"] and sent.items_to(5) == []
    kinds = {message.kind for _, message in sent.frames}
    assert kinds == {ItemKind.TRANSFER}, kinds  # a transfer travels as a transfer
    forwarding.committed([b"id-b"])
    sent.frames.clear()
    forwarding.resend()
    assert sent.frames == [] and len(forwarding) == 0


def test_pending_items_are_bounded_by_the_mempool_limit_oldest_dropped_first() -> None:
    sent = _Sent()
    sent.leaders = [3, 3]  # one leader twice (the same validator leads both heights): sent once
    forwarding = LeaderForwarding(sent.send, lambda: sent.leaders, limit=2)
    for name in (b"a", b"b", b"c"):
        forwarding.submitted(ItemKind.PROOF, name, b"raw-" + name)
    assert sent.items_to(3) == [b"raw-a", b"raw-b", b"raw-c"] and len(forwarding) == 2
    sent.frames.clear()
    forwarding.resend()
    assert sent.items_to(3) == [b"raw-b", b"raw-c"]
