"""Seven real validators on the collector vote path, one of them a Byzantine collector (issue 16).

``collectors = 1``: a view's only collector is its leader, so at every height the faulty node leads its
certificates are the only ones there are. Honest replicas must refuse each lying certificate (counted,
with its reason in the event log) or hear none, fall back to all-to-all after ``collector_timeout_ms``
and commit anyway; the chains must agree. The faulty node logs each certificate it forged or withheld,
so the test checks what was sent against what was refused, height by height; the run's safety check
(harness/run/safety.py) then verifies every stored certificate and compares the chains.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.run.safety import SafetyCheck, check_safety
from popbench.errors import ConfigError
from popbench.events import Field, events_path, read_events
from popbench.genesis import VOTES_COLLECTOR, ChainParams, make_genesis
from popbench.pop.byzantine import engine_for
from popbench.store import node_database
from popbench.wire import RejectReason
from tests.cluster import LocalCluster, Statuses, node_db
from tests.test_pbft_network import make_proofs, submit_all

N = 7
PARAMS = replace(ChainParams(), votes=VOTES_COLLECTOR, collectors=1, collector_timeout_ms=300, view_timeout_ms=4000,
                 batch_size=10)  # fmt: skip
FAULTY_FIRST_HEIGHT = 2  # the faulty node leads (and alone collects) view 0 of height 2, then every N heights
FAULTY_TURNS = 2  # heights at which it must have collected, and lied or withheld
AFTER_LAST_TURN = 4  # K: blocks every honest node commits after the faulty node's last checked turn
TARGET_HEIGHT = FAULTY_FIRST_HEIGHT + (FAULTY_TURNS - 1) * N + AFTER_LAST_TURN
PROOFS = (TARGET_HEIGHT + 3) * PARAMS.batch_size
DEADLINE_S = 150.0
LIES = ("bad-aggregate", "forged-bitmap")
Event = dict[str, Field]


def test_a_collector_fault_on_an_all_to_all_chain_is_refused_by_name() -> None:
    """There it would simply be an honest node: a run that asked for one must not pass as a faulty one."""
    genesis, _ = make_genesis(4, seed="test-cluster")
    with pytest.raises(ConfigError, match="collector fault") as refused:
        engine_for("forged-bitmap", SimpleNamespace(genesis=genesis))  # type: ignore[arg-type]  # refused before use
    assert refused.value.key == "byzantine"


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("behaviour", ["withhold-certificates", *LIES])
def test_a_byzantine_collector_of_seven_costs_a_fallback_never_safety_and_commits_go_on(tmp_path: Path, behaviour: str) -> None:
    faulty = make_genesis(N, seed="test-cluster", params=PARAMS)[0].leader_for_view(FAULTY_FIRST_HEIGHT)  # view 0
    honest = [node for node in range(N) if node != faulty]
    cluster = LocalCluster(tmp_path, N, params=PARAMS, byzantine={faulty: behaviour})
    statuses: Statuses = {}
    stalled: AssertionError | None = None
    try:
        cluster.start()
        statuses = asyncio.run(_commit_past_the_faulty_turns(cluster, honest))
    except AssertionError as err:
        stalled = err  # reported below with the event logs, once the nodes are stopped
    finally:
        cluster.stop()
    events = _events(tmp_path)
    if stalled is not None:
        raise AssertionError(f"{stalled}\n{_diagnosis(faulty, events, statuses)}") from stalled
    diagnosis = _diagnosis(faulty, events, statuses)
    _check_counters(faulty, behaviour, honest, statuses, diagnosis)
    turns = _faulty_turns(events[faulty], behaviour)
    checked = [height for height in turns if height <= TARGET_HEIGHT - AFTER_LAST_TURN]
    assert len(checked) >= FAULTY_TURNS, f"the faulty node collected and lied at heights {turns}\n{diagnosis}"
    for height in checked:  # later turns may not have finished when the nodes stopped
        _check_turn(height, faulty, behaviour, honest, events, diagnosis)
    safety = _harness_safety_check(cluster)
    assert safety.agree and min(safety.heights[node] for node in honest) >= TARGET_HEIGHT, f"{safety}\n{diagnosis}"


def _harness_safety_check(cluster: LocalCluster) -> SafetyCheck:
    """The run's own safety check (every stored certificate verified, chains linked, no two nodes differ at
    a height) over copies of the stopped nodes' databases, laid out as a run's data directory keeps them."""
    data_dir = cluster.root / "safety"
    data_dir.mkdir()
    for node in range(N):
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{node_db(cluster.root, node)}{suffix}")
            if source.exists():
                shutil.copy(source, f"{node_database(data_dir, node)}{suffix}")
    return check_safety(data_dir, N, cluster.genesis)


async def _commit_past_the_faulty_turns(cluster: LocalCluster, honest: list[int]) -> Statuses:
    """Link everyone, hand one honest node proofs for every block up to the target, wait for all honest to commit them."""
    await cluster.wait_connected()
    client = await cluster.client(honest[0])
    try:
        results = await submit_all(client, make_proofs(cluster, PROOFS))
        assert set(results.values()) == {RejectReason.ACCEPTED}, results
        return await cluster.wait_until(
            lambda s: all(s[n] is not None and s[n].height >= TARGET_HEIGHT for n in honest),  # type: ignore[union-attr]
            DEADLINE_S, what=f"every honest node at height {TARGET_HEIGHT}",
        )  # fmt: skip
    finally:
        client.close()


def _events(root: Path) -> dict[int, list[Event]]:
    return {node: read_events(events_path(root / f"node-{node}", node)) for node in range(N)}


def _check_counters(faulty: int, behaviour: str, honest: list[int], statuses: Statuses, diagnosis: str) -> None:
    """What STATUS shows: whether the faulty node sent certificates at all, and the refusals as protocol errors."""
    faulty_status = statuses[faulty]
    assert faulty_status is not None, diagnosis
    sent = sum(faulty_status.counters.frames_out.get(kind, 0) for kind in ("PrepareAggregate", "CommitAggregate"))
    errors = sum(s.counters.protocol_errors for node, s in statuses.items() if node in honest and s is not None)
    if behaviour == "withhold-certificates":
        assert sent == 0, f"a withholding collector sent {sent} certificates\n{diagnosis}"
    else:
        assert sent > 0 and errors > 0, f"certificates sent {sent}, honest protocol errors {errors}\n{diagnosis}"


def _faulty_turns(events: list[Event], behaviour: str) -> list[int]:
    """The heights at which the faulty node formed a certificate and forged or withheld it."""
    logged = "certificate-withheld" if behaviour == "withhold-certificates" else "certificate-forged"
    return sorted({int(e["height"]) for e in events if e["event"] == logged})  # type: ignore[arg-type]


def _check_turn(height: int, faulty: int, behaviour: str, honest: list[int], events: dict[int, list[Event]], diagnosis: str) -> None:
    """At a height the faulty node collected: honest nodes refused its certificates (or had none) and fell back."""

    def at(node: int, name: str) -> list[Event]:
        return [e for e in events[node] if e["event"] == name and e["height"] == height]

    refused = {node: at(node, "certificate-refused") for node in honest}
    fell_back = [node for node in honest if at(node, "collector-fallback")]
    # with no certificate, a commit sums n - f shares itself, and a non-collector gets shares only from
    # validators that fell back: more than f honest ones must have
    assert len(fell_back) > (N - 1) // 3, f"only honest nodes {fell_back} fell back at height {height}\n{diagnosis}"
    if behaviour == "withhold-certificates":
        assert not any(refused.values()), f"certificates refused though none was sent: {refused}\n{diagnosis}"
        return
    refusers = [node for node, rows in refused.items() if rows]
    assert refusers, f"no honest node refused the faulty node's certificate at height {height}\n{diagnosis}"
    for rows in refused.values():
        for row in rows:
            assert row["sender"] == faulty and "does not verify" in str(row["reason"]), row


def _diagnosis(faulty: int, events: dict[int, list[Event]], statuses: Statuses) -> str:
    """What to read when an assertion fails: each node's height and counters, and the certificate events."""
    lines = [f"faulty node {faulty}"]
    for node, status in sorted(statuses.items()):
        if status is not None:
            counters = status.counters
            lines.append(f"node {node}: h={status.height} v={status.view} protocol_errors={counters.protocol_errors} "
                         f"view_changes={counters.view_changes} aggregates_out={counters.frames_out.get('PrepareAggregate', 0)}"
                         f"+{counters.frames_out.get('CommitAggregate', 0)}")  # fmt: skip
    watched = ("certificate-sent", "certificate-forged", "certificate-withheld", "certificate-refused", "collector-fallback",
               "view-entered")  # fmt: skip
    for node, rows in sorted(events.items()):
        lines += [f"  {node}: {row}" for row in rows if row["event"] in watched][:40]
    return "\n".join(lines)
