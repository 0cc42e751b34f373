"""The bounded mesh (docs/protocol.md, section 15): the RELAYED envelope, the flood's checks, the graph,
and a real run of PBFT over a 4-regular mesh with collector votes.

The flood's checks are unit tests of :class:`popbench.pop.mesh.MeshFlood`, each with the case that must
be refused: a forged signature, an unknown origin, a type that may not flood, a node's own envelope back,
an echo. The run is the real harness: node processes that link only to their mesh neighbours, so most
validators hear the leader's proposal and the collectors' certificates only through others.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.host.topology import k_regular
from popbench import crypto
from popbench.counters import NodeCounters
from popbench.errors import ConfigError
from popbench.pop.mesh import MeshFlood, relay_signed_bytes
from popbench.wire import CommitAggregate, Gossip, ItemKind, PrepareAggregate, Relayed, Submit, decode_message, encode_frame
from tests.test_harness_run import assert_passed, finish, read_report, start_run, write_profile

SPEC = Path(__file__).parent.parent / "docs" / "protocol.md"
CHAIN = b"\xaa" * 32
KEYS = [crypto.SigningKey.from_secret((s + 1).to_bytes(32, "big")) for s in range(3)]
PUBLIC = {node: key.public_key for node, key in enumerate(KEYS)}
AGGREGATE = bytes.fromhex(
    "99569d7f553a16529e575588c7f2512efa0e38d847cfd182cb5593c26641e64f599f1f69a739fda5f19ab1a452ae870e"
    "152c69df982fcaf47528c5879d230a92640212050185584226f8e8dfc7db3e8aea15dfb37f10ceb3f5e39a2395b452aa"
)  # section 14.4's aggregate of s = 1, 2, 3
CERTIFICATE = PrepareAggregate(0, 1, b"\xbb" * 32, b"\xe0", AGGREGATE)


def _flood(node: int) -> MeshFlood:
    return MeshFlood(node, KEYS[node], CHAIN, PUBLIC, NodeCounters())


def _envelope(frame: bytes) -> Relayed:
    message = decode_message(frame[4], frame[5:])
    assert isinstance(message, Relayed)
    return message


def test_the_relayed_envelope_of_the_spec_vector_is_what_the_spec_prints() -> None:
    frame = _flood(0).wrap(CERTIFICATE)
    envelope = _envelope(frame)
    spec = SPEC.read_text(encoding="utf-8")
    signed = relay_signed_bytes(CHAIN, 27, CERTIFICATE.encode_body())
    assert len(signed) == 200 and signed.startswith(b"popbench/relay/v1/" + CHAIN + b"\x1b")
    assert envelope.signature.hex() in spec  # ECDSA (RFC 6979 nonces) is deterministic: the vector is fixed
    assert frame[:9].hex() == "000000da1d00000000" and frame[:9].hex() in spec
    assert len(frame) == 223 and envelope.inner == CERTIFICATE.encode_body()
    assert decode_message(envelope.inner_type, envelope.inner) == CERTIFICATE


def test_a_first_seen_envelope_is_delivered_once_and_its_echoes_are_counted_as_duplicates() -> None:
    receiver = _flood(1)
    envelope = _envelope(_flood(0).wrap(CERTIFICATE))
    assert receiver.receive(envelope) == CERTIFICATE
    assert receiver.receive(envelope) is None and receiver.receive(envelope) is None
    assert receiver.counters.relay_duplicates == 2 and receiver.counters.protocol_errors == 0


def test_the_same_content_under_another_signature_is_an_echo_and_not_checked_again() -> None:
    """Dedup is by origin and content, before the signature is checked: an origin can sign one message
    many ways (and a forwarder can garble the signature), and either way it is delivered once."""
    receiver = _flood(1)
    first = _envelope(_flood(0).wrap(CERTIFICATE))
    again = Relayed(0, bytes(reversed(first.signature)), first.inner_type, first.inner)
    assert receiver.receive(first) == CERTIFICATE
    assert receiver.receive(again) is None and receiver.counters.relay_duplicates == 1


@pytest.mark.parametrize("case", ["forged signature", "claims another origin", "unknown origin", "not a flooded type", "own envelope"])
def test_an_envelope_that_must_not_be_believed_is_refused_and_counted(case: str) -> None:
    receiver = _flood(1)
    good = _envelope(_flood(0).wrap(CERTIFICATE))
    if case == "forged signature":
        bad = Relayed(0, bytes(64), good.inner_type, good.inner)
    elif case == "claims another origin":
        bad = Relayed(2, good.signature, good.inner_type, good.inner)  # node 0's signature, node 2's name
    elif case == "unknown origin":
        bad = Relayed(7, good.signature, good.inner_type, good.inner)
    elif case == "not a flooded type":
        submit = Submit(1, ItemKind.PROOF, b"x")
        body = submit.encode_body()
        bad = Relayed(0, KEYS[0].sign(relay_signed_bytes(CHAIN, Submit.TYPE, body)), Submit.TYPE, body)
    else:
        bad = _envelope(receiver.wrap(CERTIFICATE))
    assert receiver.receive(bad) is None
    if case == "own envelope":  # its own flood coming back is an echo, as from anyone: no error
        assert (receiver.counters.protocol_errors, receiver.counters.relay_duplicates) == (0, 1)
        return
    assert receiver.counters.protocol_errors == 1
    assert receiver.receive(good) == CERTIFICATE  # a refused envelope is not remembered: the genuine one gets through


def test_signed_garbage_is_refused_once_and_then_remembered() -> None:
    receiver = _flood(1)
    body = b"\x00" * 5  # not a COMMIT_AGGREGATE body
    garbage = Relayed(0, KEYS[0].sign(relay_signed_bytes(CHAIN, CommitAggregate.TYPE, body)), CommitAggregate.TYPE, body)
    assert receiver.receive(garbage) is None and receiver.counters.protocol_errors == 1
    assert receiver.receive(garbage) is None and receiver.counters.relay_duplicates == 1


def test_a_relayed_body_shorter_than_its_head_does_not_decode() -> None:
    frame = encode_frame(Relayed(0, bytes(64), Gossip.TYPE, b""))
    assert len(frame) == 5 + 69
    with pytest.raises(Exception, match="at least 69 bytes"):
        decode_message(Relayed.TYPE, frame[5:20])


@pytest.mark.parametrize(("n", "k"), [(12, 4), (100, 8), (1000, 8)])
def test_the_mesh_is_a_simple_k_regular_graph(n: int, k: int) -> None:
    topology = k_regular(n, k, seed=5)
    assert len(topology.intended) == n * k // 2
    assert all(len(edge) == 2 for edge in topology.intended)  # no loops (a set of frozensets has no doubles)
    assert {topology.expected_links(node) for node in range(n)} == {k}
    assert all(node not in topology.neighbours(node) and len(topology.neighbours(node)) == k for node in range(n))


def test_an_impossible_degree_is_refused_with_its_key() -> None:
    with pytest.raises(ConfigError, match=r"network\.degree"):
        k_regular(5, 3, seed=1)


def _mesh_profile(tmp_path: Path, votes: str, rate: float = 50.0, duration: float = 6.0) -> Path:
    """The tiny test profile on 12 validators over a 4-regular graph."""
    profile = write_profile(tmp_path, nodes=12, rate=rate, duration=duration)
    mesh = f'[network]\nnodes = 12\ntopology = "k-regular"\ndegree = 4\nvotes = "{votes}"\n'
    profile.write_text(profile.read_text().replace("[network]\nnodes = 12\n", mesh))
    return profile


def test_a_bounded_mesh_with_all_to_all_votes_is_refused_by_name(tmp_path: Path) -> None:
    code, output = finish(start_run(_mesh_profile(tmp_path, "all-to-all"), tmp_path / "run"))
    assert code != 0 and "network.topology" in output and "collector" in output, output


def test_pbft_over_a_4_regular_mesh_commits_everything_through_relays(tmp_path: Path) -> None:
    """12 validators, each linked to 4: the leader's PRE-PREPARE and the certificates reach the others by
    relays, shares reach collectors over links opened on demand, and every item commits on one chain."""
    run_dir = tmp_path / "run"
    code, output = finish(start_run(_mesh_profile(tmp_path, "collector"), run_dir))
    assert_passed(code, run_dir, output)
    report = read_report(run_dir)
    metrics = report["metrics"]
    assert report["deployment"]["topology"] == "k-regular" and report["deployment"]["votes"] == "collector"
    assert metrics["stability"]["safety"]["agree"] is True, metrics["stability"]
    throughput = metrics["throughput"]
    assert throughput["valid_committed"] == throughput["valid_submitted"] > 0, throughput
    assert metrics["connectivity"]["intended_links"] == 24
    by_type = metrics["cost"]["messages_per_block_by_type"]
    assert by_type.get("Relayed", 0) > 0 and by_type.get("PrepareShare", 0) > 0, by_type
    flooded = {"PrePrepare", "PrepareAggregate", "CommitAggregate", "Prepare", "Commit"}
    assert not flooded & set(by_type), by_type  # never sent bare over a link: only inside RELAYED
