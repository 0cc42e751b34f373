"""The fault vocabulary (issue 20): parsing, targets, the schedule, the nodes' shares, the nemesis, the
recovery figures, and the accounting's verdicts, each tested with the case that must fail."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import pytest
from msgspec.structs import replace

from harness.kinds import FaultKind, FaultMechanism
from harness.load.records import ProofRecord
from harness.nemesis import draw_faults, with_nemesis
from harness.profile import Fault, Nemesis, load_profile
from harness.report.schema import Grade, GradeReason
from harness.report.score import score
from harness.run.accounting import account
from harness.run.fault_net import NetFaults
from harness.run.fault_targets import cut_off_nodes, cut_pairs, partition_sides, resolve_nodes
from harness.run.faults import plan_steps
from harness.run.safety import SafetyCheck
from popbench.errors import ConfigError
from popbench.faults import NodeFaults, faults_path
from popbench.wire import RejectReason
from tests.test_score_v2 import healthy, smoke

PROFILE = """
name = "f"
[network]
nodes = 7
[[faults]]
{fault}
"""


def load(tmp_path: Path, fault: str) -> list[Fault]:
    path = tmp_path / "f.toml"
    path.write_text(PROFILE.format(fault=fault))
    return load_profile(str(path)).faults


def test_the_old_node_key_is_a_node_target_and_new_kinds_parse(tmp_path: Path) -> None:
    (old,) = load(tmp_path, 'at_s = 1.0\nkind = "kill"\nnode = 3')
    assert old.target == "node:3" and old.node == 3
    (link,) = load(tmp_path, 'at_s = 1.0\nkind = "link"\ntarget = "random:2"\nduration_s = 4.0\ndelay_ms = 50.0\nloss = 0.1')
    assert (link.kind, link.node, link.delay_ms, link.loss, link.mechanism) == (FaultKind.LINK, -1, 50.0, 0.1, FaultMechanism.AUTO)


@pytest.mark.parametrize(("fault", "key"), [
    ('at_s = 1.0\nkind = "kill"', "faults[0].target"),
    ('at_s = 1.0\nkind = "kill"\nnode = 1\ntarget = "leader"', "faults[0].node"),
    ('at_s = 1.0\nkind = "pause"\ntarget = "halves"', "faults[0].target"),
    ('at_s = 1.0\nkind = "restart"\ntarget = "leader"', "faults[0].target"),
    ('at_s = 1.0\nkind = "disk"\ntarget = "node:1"', "faults[0].mode"),
    ('at_s = 1.0\nkind = "link"\ntarget = "node:1"\nloss = 1.5', "faults[0].loss"),
    ('at_s = 1.0\nkind = "kill"\nnode = 9', "faults.node"),
    ('at_s = 0.0\nkind = "byzantine"\nnode = 1\nbehaviour = "bad-aggregate"', "faults[0].behaviour"),  # all-to-all votes
])  # fmt: skip
def test_a_bad_fault_is_refused_with_its_key(tmp_path: Path, fault: str, key: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, fault)
    assert refused.value.key == key, refused.value


def test_steps_heal_after_their_duration_and_a_heal_comes_before_an_apply_at_one_instant() -> None:
    kill = Fault(at_s=5.0, kind=FaultKind.KILL, target="node:1", duration_s=3.0)
    pause = Fault(at_s=8.0, kind=FaultKind.PAUSE, target="node:2", duration_s=2.0)
    byzantine = Fault(at_s=0.0, kind=FaultKind.BYZANTINE, target="node:3", behaviour="silent")
    steps = plan_steps([kill, pause, byzantine])
    assert [(s.at_s, s.heal, s.index) for s in steps] == [(5.0, False, 0), (8.0, True, 0), (8.0, False, 1), (10.0, True, 1)]


def test_targets_are_drawn_from_the_seed_and_a_partition_cuts_its_sides() -> None:
    random2 = Fault(at_s=1.0, kind=FaultKind.PAUSE, target="random:2")
    assert resolve_nodes(random2, 0, 7, seed=5) == resolve_nodes(random2, 0, 7, seed=5)
    assert len(set(resolve_nodes(random2, 0, 7, seed=5))) == 2
    leader = Fault(at_s=1.0, kind=FaultKind.KILL, target="leader")
    assert resolve_nodes(leader, 0, 7, 1, leaders=[4, 4, 2]) == [4]
    bridge = Fault(at_s=1.0, kind=FaultKind.PARTITION, target="bridge")
    side_a, side_b = partition_sides(bridge, resolve_nodes(bridge, 0, 7, 1), 7)
    assert 0 not in side_a + side_b and not set(side_a) & set(side_b) and len(side_a + side_b) == 6
    minority = Fault(at_s=1.0, kind=FaultKind.PARTITION, target="minority")
    cut = resolve_nodes(minority, 0, 7, 1)
    assert len(cut) == 2 and cut_off_nodes(minority, cut, 7) == cut


def test_each_node_is_told_its_share_and_a_heal_takes_it_back(tmp_path: Path) -> None:
    net = NetFaults(tmp_path, 4, dict, None, "not root")
    partition = Fault(at_s=1.0, kind=FaultKind.PARTITION, target="node:3", mechanism=FaultMechanism.KERNEL)
    detail = net.apply(0, partition, [3])
    assert detail["mechanism"] == "transport" and "not root" in detail["note"]  # asked for the kernel, said why not
    link = Fault(at_s=1.0, kind=FaultKind.LINK, target="node:1", delay_ms=100.0)
    net.apply(1, link, [1])
    shares = net.shares()
    assert shares[3]["blocked"] == [0, 1, 2] and shares[0]["blocked"] == [3]
    assert shares[1]["links"]["*"]["delay_ms"] == 100.0 and shares[0]["links"]["1"]["delay_ms"] == 100.0
    node = NodeFaults()
    node.load(faults_path(tmp_path, 0))  # what node 0 reads from the file the harness wrote
    assert node.links.blocks(3) and node.links.hold_s(1, 100) == pytest.approx(0.1) and node.links.hold_s(3, 100) is None
    assert net.heal(0) and net.heal(1) and not net.heal(1)
    node.load(faults_path(tmp_path, 0))
    assert not node.active


def test_the_nemesis_is_the_same_for_a_seed_and_stays_within_f_one_fault_at_a_time() -> None:
    nemesis = Nemesis(kind="random", max_faulty=5)
    drawn = draw_faults(nemesis, 7, 600.0, seed=20)
    assert drawn == draw_faults(nemesis, 7, 600.0, seed=20) and drawn != draw_faults(nemesis, 7, 600.0, seed=21)
    assert len(drawn) > 10 and {f.kind for f in drawn} >= {FaultKind.KILL, FaultKind.PARTITION, FaultKind.PAUSE}
    for fault in drawn:
        count = int(fault.target.split(":")[1]) if fault.target.startswith("random:") else 2 if fault.target == "minority" else 1
        assert count <= 2, fault  # f = 2 at n = 7, whatever max_faulty says
    for earlier, later in itertools.pairwise(drawn):
        assert earlier.at_s + earlier.duration_s < later.at_s, (earlier, later)
    assert drawn[-1].at_s + drawn[-1].duration_s <= 0.85 * 600.0


def test_a_profile_without_a_nemesis_is_left_alone() -> None:
    assert with_nemesis(smoke()) == smoke()


# -- the checker's verdicts: a lost item, an unexpected one, and a partition that never heals -------------
def acked(n: int) -> ProofRecord:
    return ProofRecord(n, n.to_bytes(32, "big"), 0, 0, reason=RejectReason.ACCEPTED)


def graded(safety: SafetyCheck) -> tuple[Grade | None, set[GradeReason]]:
    metrics = healthy()
    result = score(replace(metrics, stability=replace(metrics.stability, safety=safety)), smoke())
    return result.grade, {c.reason for c in result.conditions}


def test_a_lost_item_an_unexpected_item_and_a_partition_that_never_healed_each_fail_the_run() -> None:
    chain = Counter({acked(1).proof_id: 1, acked(2).proof_id: 1})
    ok = account([acked(1), acked(2)], [], chain, drained=True)
    lost = account([acked(1), acked(2), acked(3)], [], chain, drained=True)
    unexpected = account([acked(1)], [], chain, drained=True)
    # items node 3 acknowledged while cut off by a partition that never healed never reach the chain
    never_healed = account([acked(1), acked(2), *(acked(n) for n in range(10, 20))], [], chain, drained=True)
    base = SafetyCheck(nodes_checked=4, heights_checked=10, agree=True)
    assert graded(replace_accounting(base, ok))[0] != Grade.F
    for accounting in (lost, unexpected, never_healed):
        grade, reasons = graded(replace_accounting(base, accounting))
        assert grade == Grade.F and GradeReason.ITEMS_LOST in reasons, accounting


def replace_accounting(safety: SafetyCheck, accounting: object) -> SafetyCheck:
    return SafetyCheck(safety.nodes_checked, safety.heights_checked, safety.agree, accounting=accounting)  # type: ignore[arg-type]


def test_cut_pairs_are_unordered_and_never_a_node_with_itself() -> None:
    assert cut_pairs([0, 1], [1, 2]) == [(0, 1), (0, 2), (1, 2)]
