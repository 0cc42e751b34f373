"""Host checks before forking (harness/host/limits.py), and a node that stays single-threaded.

A host that cannot carry N is refused with the numbers before anything is forked: processes (kernel.pid_max,
a pids cgroup, RLIMIT_NPROC), open files (RLIMIT_NOFILE, fs.file-max) and memory. The facts are built by
hand or monkeypatched, so the refusals are checked on any machine.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli.main import main
from harness.host import limits
from harness.host.limits import Headroom, HostFacts, HostNeeds
from popbench import crypto
from popbench.errors import HarnessError
from popbench.model.proof import Proof
from popbench.wire import ItemKind
from tests.cluster import LocalCluster

AMPLE = 10**9


def roomy_host(**changes: object) -> HostFacts:
    facts = HostFacts(tasks=[Headroom("kernel.pid_max", 32_768, 200, "raise it")], open_files_soft=AMPLE,
                      open_files_hard=AMPLE, file_max=AMPLE, files_open=1_000, memory_available_mib=1e9)  # fmt: skip
    for name, value in changes.items():
        setattr(facts, name, value)
    return facts


def test_a_roomy_host_carries_the_run_and_says_so() -> None:
    notes = limits.check_host(HostNeeds(100, drivers=1), roomy_host())
    assert notes[0] == "processes: 166 needed, 32,568 free under kernel.pid_max", notes
    assert any(note.startswith("open files: 368 needed") for note in notes), notes
    assert any(note.startswith("memory: about") for note in notes), notes


def test_a_pids_cgroup_too_small_for_n_is_refused_with_its_numbers() -> None:
    cgroup = Headroom("the pids cgroup /sys/fs/cgroup/pids/job (pids.max)", 512, 100, "raise its pids.max")
    facts = roomy_host(tasks=[Headroom("kernel.pid_max", 32_768, 200, "raise it"), cgroup])
    with pytest.raises(HarnessError) as refused:
        limits.check_host(HostNeeds(1000, drivers=2, miners=3), facts)
    message = str(refused.value)
    assert "this host cannot carry 1,000 nodes; nothing was started" in message, message
    assert "processes: 1,070 needed (1,000 nodes, 2 drivers, 3 miners" in message, message
    assert "pids.max) allows 512 and 100 are in use (412 free)" in message, message
    assert "kernel.pid_max" not in message, message  # only the limit that falls short is named


def test_open_files_below_a_full_mesh_and_short_memory_are_both_named() -> None:
    facts = roomy_host(open_files_soft=1024, open_files_hard=4096, memory_available_mib=2_000.0)
    with pytest.raises(HarnessError) as refused:
        limits.check_host(HostNeeds(5000, drivers=1), facts)
    message = str(refused.value)
    assert "open files: the busiest process needs about 15,068 descriptors" in message, message
    assert "the hard limit (RLIMIT_NOFILE) is 4,096" in message, message
    assert "memory: 5,000 nodes need about" in message and "but 2,000 MiB is available" in message, message


def test_the_system_wide_file_limit_counts_every_nodes_links() -> None:
    facts = roomy_host(file_max=200_000, files_open=50_000)
    with pytest.raises(HarnessError, match=r"holds about 1,019,068 descriptors at once but fs.file-max is 200,000"):
        limits.check_host(HostNeeds(1000), facts)


def test_popbench_run_refuses_before_forking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = roomy_host(tasks=[Headroom("RLIMIT_NPROC (ulimit -u)", 64, 20, "raise it (ulimit -u)")])
    monkeypatch.setattr(limits, "read_host", lambda: tiny)
    soft_before = resource.getrlimit(resource.RLIMIT_NOFILE)
    output = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "--profile", "smoke", "--nodes", "100", "--output", str(output)])
    assert result.exit_code == 2, result.output
    assert "this host cannot carry 100 nodes" in result.output, result.output
    assert "RLIMIT_NPROC (ulimit -u) allows 64 and 20 are in use (44 free)" in result.output, result.output
    assert not list(tmp_path.rglob("pids.json")), "a child was forked before the refusal"
    assert not list(tmp_path.rglob("genesis.json")), "the run deployed before the refusal"
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == soft_before


def test_this_hosts_facts_are_read() -> None:
    facts = limits.read_host()
    assert facts.memory_available_mib > 0
    assert facts.open_files_soft > 0
    assert any(limit.name == "kernel.pid_max" for limit in facts.tasks), facts.tasks


@pytest.mark.timeout(180)
def test_a_validator_stays_single_threaded(tmp_path: Path) -> None:
    """libuv starts its thread pool on a name lookup or a file operation; a node dials numeric addresses and
    does neither, so each validator process keeps one task from start through commits."""
    cluster = LocalCluster(tmp_path, 4)
    cluster.start()
    try:
        asyncio.run(_commit_a_few(cluster))
        for node, proc in cluster.procs.items():
            tasks = sorted(os.listdir(f"/proc/{proc.pid}/task"))
            assert tasks == [str(proc.pid)], f"node {node} (pid {proc.pid}) runs {len(tasks)} threads: {tasks}"
    finally:
        cluster.stop()


async def _commit_a_few(cluster: LocalCluster) -> None:
    await cluster.wait_connected(timeout_s=60.0)
    owner = crypto.derive_key("thread-check", 0)
    bits = cluster.genesis.params.min_work_bits
    proofs = [Proof.create(owner, cluster.chain_id, bytes([i]), bits, 1, time.time_ns()) for i in range(20)]
    client = await cluster.client(0)
    for index, proof in enumerate(proofs):
        client.submit(index, ItemKind.PROOF, proof.encode())

    def committed(statuses) -> bool:  # type: ignore[no-untyped-def]
        return all(s is not None and s.counters.proofs_committed >= len(proofs) for s in statuses.values())

    await cluster.wait_until(committed, timeout_s=90.0, what="20 proofs committed on every node")
    client.close()
