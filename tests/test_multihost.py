"""The multi-host path on one machine: the plan, host supervisors on 127.0.1.x, and a coordinator's one report.

Three ``popbench host-supervisor`` processes on 127.0.1.1-3 (all of 127.0.0.0/8 is loopback on Linux)
run two validators each; ``popbench coordinate`` drives the load and writes the report. They form one
committing network: every link up, every acknowledged item committed once, chains that agree (checked
on the databases the coordinator fetched from the hosts).
"""

from __future__ import annotations

import asyncio
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from harness.multihost.control import (
    DataFiles,
    Done,
    ExitRequest,
    FilesRequest,
    HostClient,
    HostState,
    KillRequest,
    RestartRequest,
    StateRequest,
    Stopped,
    StopRequest,
)
from harness.multihost.plan import HostPlan, expand_names, ordinal_from_hostname, resolved
from popbench.errors import ConfigError

HOSTS = ("127.0.1.1", "127.0.1.2", "127.0.1.3")
RUN_TIMEOUT_S = 150.0

PROFILE = """
name = "multihost"
description = "test run over three host supervisors"

[network]
nodes = {nodes}

[workload]
rate = 100.0

[run]
duration_s = 4.0
warmup_s = 1.0
cooldown_s = 0.5
status_interval_s = 0.5
drain_s = 5.0
seed = 3
ready_timeout_s = 60.0
"""


# -- the plan ------------------------------------------------------------------------------------------
def test_each_host_runs_a_contiguous_range_of_ids() -> None:
    plan = HostPlan(100, 4, ("a", "b", "c", "d"))
    assert plan.per_host == 25
    assert [plan.ids(i) for i in range(4)] == [range(25), range(25, 50), range(50, 75), range(75, 100)]
    assert plan.endpoint(0) == ("a", 7100) and plan.endpoint(26) == ("b", 7101) and plan.endpoint(99) == ("d", 7124)
    assert plan.control(2) == ("c", 7000)
    uneven = HostPlan(10, 4, ("a", "b", "c", "d"))
    assert [len(uneven.ids(i)) for i in range(4)] == [3, 3, 3, 1]
    assert sorted(n for i in range(4) for n in uneven.ids(i)) == list(range(10))


def test_a_plan_that_leaves_a_host_empty_or_overlaps_ports_is_refused() -> None:
    with pytest.raises(ConfigError, match="use --hosts 3"):
        HostPlan(9, 4, ("a", "b", "c", "d"))  # 3 a host fill 3 hosts; the 4th would run none
    with pytest.raises(ConfigError, match="1 <= hosts"):
        HostPlan(3, 4, ("a", "b", "c", "d"))
    with pytest.raises(ConfigError, match="control port"):
        HostPlan(8, 2, ("a", "b"), base_port=7000, control_port=7002)
    with pytest.raises(ConfigError, match="2 host addresses for 3 hosts"):
        HostPlan(9, 3, ("a", "b"))


def test_names_expand_from_a_list_or_a_pattern_and_resolve_once() -> None:
    assert expand_names("127.0.1.{n}", 3) == HOSTS
    assert expand_names("popbench-{i}.popbench", 2) == ("popbench-0.popbench", "popbench-1.popbench")
    assert expand_names("x, y", 2) == ("x", "y")
    assert ordinal_from_hostname("popbench-12") == 12
    with pytest.raises(ConfigError):
        ordinal_from_hostname("laptop")
    named = HostPlan(4, 2, ("popbench-0.popbench", "127.0.1.2"))
    numeric = resolved(named, 1.0, resolve=lambda name: "10.0.0.7" if name.startswith("popbench") else name)
    assert numeric.names == ("10.0.0.7", "127.0.1.2")
    with pytest.raises(ConfigError, match="did not resolve"):
        resolved(named, 0.0, resolve=lambda name: (_ for _ in ()).throw(OSError("no such host")))


# -- processes -----------------------------------------------------------------------------------------
def loopback_hosts_bind() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        for host in HOSTS:
            with socket.socket() as sock:
                sock.bind((host, 0))
    except OSError:
        return False
    return True


needs_loopback = pytest.mark.skipif(not loopback_hosts_bind(), reason="binding 127.0.1.x needs Linux (all of 127/8 local)")


def free_ports(count: int) -> tuple[int, int]:
    """A control port and ``count`` validator ports after it, free on every test host (below the
    ephemeral range, so no kernel-picked port of another run can take one meanwhile)."""
    for _ in range(100):
        base = random.randrange(20000, 30000)
        try:
            for host in HOSTS:
                for port in range(base, base + count + 1):
                    with socket.socket() as sock:
                        sock.bind((host, port))
        except OSError:
            continue
        return base, base + 1
    raise RuntimeError("no free port range")


def popbench(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "popbench"), *args]


def start_hosts(profile: Path, tmp_path: Path, hosts: int, control: int, base: int) -> list[subprocess.Popen[str]]:
    return [subprocess.Popen(popbench("host-supervisor", "--profile", str(profile), "--hosts", str(hosts), "--ordinal", str(i),
                                      "--base-port", str(base), "--control-port", str(control), "--output", str(tmp_path / f"host-{i}")),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(hosts)]  # fmt: skip


def stop_all(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@needs_loopback
@pytest.mark.slow
def test_three_host_supervisors_form_one_committing_network_with_one_report(tmp_path: Path) -> None:
    profile = tmp_path / "multihost.toml"
    profile.write_text(PROFILE.format(nodes=6))
    control, base = free_ports(2)
    hosts = start_hosts(profile, tmp_path, 3, control, base)
    try:
        done = subprocess.run(popbench("coordinate", "--profile", str(profile), "--hosts", "3", "--base-port", str(base),
                                       "--control-port", str(control), "--output", str(tmp_path / "run")),
                              capture_output=True, text=True, timeout=RUN_TIMEOUT_S)  # fmt: skip
        for proc in hosts:
            proc.wait(30)  # the coordinator ends them when the run is over
    finally:
        stop_all(hosts)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all 6 validators on 3 hosts connected" in done.stdout
    report = orjson.loads((tmp_path / "run" / "report.json").read_bytes())
    metrics = report["metrics"]
    assert report["status"] == "complete"
    assert metrics["connectivity"]["links_up"] == 15 == metrics["connectivity"]["intended_links"]
    assert metrics["throughput"]["valid_committed"] == metrics["throughput"]["valid_submitted"] > 0
    safety = metrics["stability"]["safety"]
    assert safety["agree"] and safety["nodes_checked"] == 6 and len(set(safety["heights"].values())) == 1
    assert metrics["stability"]["crashes"] == []
    assert metrics["cost"]["nodes_measured"] == 6  # every validator's CPU, read by its own host
    assert sorted(p.name for p in (tmp_path / "run" / "data").glob("*.sqlite")) == [f"node-{n}.sqlite" for n in range(6)]
    for i, proc in enumerate(hosts):
        output = proc.stdout.read() if proc.stdout else ""
        assert f"host {i}: validators {2 * i}-{2 * i + 1} on {HOSTS[i]}" in output and "Traceback" not in output, output


@needs_loopback
@pytest.mark.slow
def test_a_host_kills_restarts_stops_and_hands_over_its_validators_on_request(tmp_path: Path) -> None:
    profile = tmp_path / "one.toml"
    profile.write_text(PROFILE.format(nodes=4))
    control, base = free_ports(4)
    [host] = start_hosts(profile, tmp_path, 1, control, base)
    try:
        asyncio.run(_drive_one_host(HostClient(0, (HOSTS[0], control)), tmp_path))
        host.wait(30)
    finally:
        stop_all([host])
    assert host.returncode == 0


async def _drive_one_host(client: HostClient, tmp_path: Path) -> None:
    state = await _wait_state(client, lambda s: len(s.children) == 4 and all("connected" in n.events for n in s.children.values()))
    assert (state.ordinal, state.hosts, state.nodes) == (0, 1, 4)
    assert await client.call(KillRequest(node=2), Done) == Done()
    await _wait_state(client, lambda s: not s.children[2].alive)
    restarted = await client.call(RestartRequest(node=2), Done)
    assert restarted.pid and restarted.pid != state.children[2].pid and not restarted.error
    again = await client.call(RestartRequest(node=2), Done)
    assert "still running" in again.error
    await _wait_state(client, lambda s: s.children[2].alive and s.children[2].pid == restarted.pid)
    stopped = await client.call(StopRequest(grace_s=10.0), Stopped)
    assert sorted(stopped.final) == [0, 1, 2, 3]
    assert [c.index for c in stopped.crashes] == [2]  # the kill is a crash, as on one host
    files = await client.call(FilesRequest(), DataFiles)
    assert "node-0.sqlite" in files.files
    size = await client.fetch("node-0.sqlite", tmp_path / "fetched.sqlite")
    assert size == files.files["node-0.sqlite"] == (tmp_path / "fetched.sqlite").stat().st_size
    with pytest.raises(Exception, match="no data file"):
        await client.fetch("../one.toml", tmp_path / "nope")
    await client.call(ExitRequest(), Done)
    client.close()


async def _wait_state(client: HostClient, ready: object, timeout_s: float = 60.0) -> HostState:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            state = await client.call(StateRequest(), HostState, 5.0)
            if callable(ready) and ready(state):
                return state
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError("the host never reached the state")
        await asyncio.sleep(0.1)


KILL_FAULT = """
[[faults]]
at_s = 1.0
kind = "kill"
target = "node:4"
duration_s = 1.5
"""


@needs_loopback
@pytest.mark.slow
def test_a_timed_kill_is_applied_and_healed_by_the_validators_host(tmp_path: Path) -> None:
    profile = tmp_path / "kill.toml"
    profile.write_text(PROFILE.format(nodes=6) + KILL_FAULT)
    control, base = free_ports(2)
    hosts = start_hosts(profile, tmp_path, 3, control, base)
    try:
        done = subprocess.run(popbench("coordinate", "--profile", str(profile), "--hosts", "3", "--base-port", str(base),
                                       "--control-port", str(control), "--output", str(tmp_path / "run")),
                              capture_output=True, text=True, timeout=RUN_TIMEOUT_S)  # fmt: skip
        for proc in hosts:
            proc.wait(30)
    finally:
        stop_all(hosts)
    report = orjson.loads((tmp_path / "run" / "report.json").read_bytes())
    applied = [(f["action"], f["kind"], f["nodes"], f.get("error")) for f in report["faults"]]
    assert applied == [("apply", "kill", [4], None), ("heal", "restart", [4], None)], done.stdout + done.stderr
    assert "fault: kill node 4 (host supervisor)" in done.stdout
    safety = report["metrics"]["stability"]["safety"]
    assert safety["agree"] and safety["nodes_checked"] == 6, safety
    assert [c["index"] for c in report["metrics"]["stability"]["crashes"]] == [4]  # the host reported the kill as a crash


def test_faults_the_hosts_cannot_apply_are_refused_naming_them(tmp_path: Path) -> None:
    profile = tmp_path / "pause.toml"
    profile.write_text(PROFILE.format(nodes=6) + '[[faults]]\nat_s = 1.0\nkind = "pause"\ntarget = "node:1"\nduration_s = 1.0\n')
    done = subprocess.run(popbench("coordinate", "--profile", str(profile), "--hosts", "3", "--output", str(tmp_path / "run")),
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode != 0 and "only kill and restart faults (pause asked)" in done.stdout + done.stderr, done.stdout + done.stderr
