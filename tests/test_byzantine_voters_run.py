"""`popbench run` with one Byzantine voter of four: real processes, the voter fault chosen in the profile.

The faulty node runs its behaviour from its start, so every block of the run is decided with it
voting wrongly (or not at all). The other three are exactly a quorum: commits must go on through the
whole window, every node's chain must agree, and the fault must have been seen where it is visible.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_harness_run import finish, processes_of, read_report, start_run, write_profile

pytestmark = pytest.mark.timeout(240)

BYZANTINE_NODE = 2
FAULT = """
[[faults]]
at_s = 0.0
kind = "byzantine"
node = {node}
behaviour = "{behaviour}"
"""


@pytest.mark.parametrize("behaviour", ["bad-signature-votes", "equivocate-votes", "withhold-votes"])
def test_one_byzantine_voter_of_four_keeps_chains_agreeing_and_commits_going(tmp_path: Path, behaviour: str) -> None:
    extra = FAULT.format(node=BYZANTINE_NODE, behaviour=behaviour)
    run_dir = tmp_path / "run"
    code, output = finish(start_run(write_profile(tmp_path, rate=100.0, duration=4.0, extra=extra), run_dir))
    assert code == 0, output
    report = read_report(run_dir)
    assert [f["kind"] for f in report["profile"]["faults"]] == ["byzantine"]
    metrics = report["metrics"]
    stability, throughput = metrics["stability"], metrics["throughput"]
    safety = stability["safety"]
    assert safety["agree"] is True and safety["nodes_checked"] == 4, safety
    assert metrics["consensus"]["blocks_in_steady_window"] > 0, "commits stopped once the faulty voter ran"
    assert throughput["valid_submitted"] > 0 and throughput["delivery_ratio"] >= 0.9, throughput
    honest_heights = [h for node, h in safety["heights"].items() if int(node) != BYZANTINE_NODE]
    assert min(honest_heights) >= 0.9 * max(honest_heights) > 0, safety["heights"]
    if behaviour == "bad-signature-votes":
        assert stability["protocol_errors"] > 0, "no honest node dropped a bad vote signature"
    if behaviour == "equivocate-votes":
        assert stability["equivocations_seen"] > 0, "no honest node refused the second vote"
    assert not processes_of(run_dir)
