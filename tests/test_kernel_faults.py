"""Network faults in the kernel (harness/faults/kernel.py) and the per-node loopback addresses they need.

Two kinds of test:

- everywhere: the address plan, the deployment and the nodes' dial source (a real 4-node network on
  per-node addresses commits), and KernelNet's commands and errors against a fake command runner;
- as root with iptables and tc (``.ci/run`` installs them): real rules on real loopback sockets. These skip,
  saying why, elsewhere. Their nodes sit on 127.0.200.x, which no run's plan reaches below 49,750 nodes,
  so a run going on beside them is not cut. The tests that put a qdisc on ``lo`` (which every loopback
  packet then passes) hold the benchmark lock, as a ``popbench run`` does, so no measurement runs then.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest

import harness.faults.kernel as kernel
import harness.run.fault_net as fault_net
from harness.faults.kernel import KernelNet, chain_name
from harness.host.deploy import PER_NODE, SHARED, Deployment, deploy, node_host
from harness.profile import Network, Profile, profile_from_dict
from popbench import crypto
from popbench.client import NodeClient
from popbench.errors import ClientError, ConfigError, HarnessError
from popbench.faults import faults_path
from popbench.model.proof import Proof
from popbench.net.peers import dial_source
from popbench.wire import ItemKind, RejectReason
from popbench.wire.status import AnyStatus

pytestmark = pytest.mark.timeout(300)
needs_kernel = pytest.mark.skipif(sys.platform != "linux", reason="Linux only")  # and the real_kernel fixture
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux: a receive buffer above rmem_max (root)
HOSTS = {0: "127.0.200.1", 1: "127.0.200.2", 2: "127.0.200.3"}
BENCH_LOCK = Path("/tmp/popbench-bench.lock")
LOCK_WAIT_S = 240.0
POPBENCH = str(Path(sys.executable).with_name("popbench"))
OWNER = crypto.derive_key("kernel-faults-owner", 0)
ROOT = Path(__file__).resolve().parents[1]


# -- the address plan and the deployment (everywhere) --------------------------------------------------
def test_node_addresses_follow_the_plan() -> None:
    assert [node_host(i) for i in (0, 1, 249, 250, 499, 500)] == [
        "127.0.1.1", "127.0.1.2", "127.0.1.250", "127.0.2.1", "127.0.2.250", "127.0.3.1",
    ]  # fmt: skip
    with pytest.raises(ConfigError, match=r"network\.loopback"):
        node_host(254 * 250)


def tiny_profile(nodes: int = 4) -> Profile:
    return profile_from_dict({"name": "kernel", "network": {"nodes": nodes}}, "test")


def test_per_node_addresses_reach_the_deployment_and_every_node_config(tmp_path: Path) -> None:
    deployment = deploy(tiny_profile(), tmp_path, loopback=PER_NODE)
    try:
        expected = {i: node_host(i) for i in range(4)}
        assert deployment.loopback == PER_NODE and deployment.hosts() == expected
        assert [host for host, _ in deployment.addresses()] == list(expected.values())
        for node in range(4):
            config = deployment.node_config(node)
            assert config.listen == deployment.address(node)
            assert config.listen_socket is not None and config.listen_socket.getsockname()[0] == expected[node]
            assert all(address == deployment.address(peer) for peer, address in config.dial)
    finally:
        deployment.close()


def test_shared_loopback_stays_the_default(tmp_path: Path) -> None:
    deployment = deploy(tiny_profile(), tmp_path)
    try:
        assert deployment.loopback == SHARED and set(deployment.hosts().values()) == {"127.0.0.1"}
        assert KernelNet.unavailable_reason(deployment.hosts()) is not None  # shared: never the kernel path
    finally:
        deployment.close()


def test_an_unknown_loopback_mode_is_refused_by_its_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"network\.loopback"):
        deploy(tiny_profile(), tmp_path, loopback="per-host")


def test_a_node_dials_from_its_own_loopback_address_only_to_loopback() -> None:
    assert dial_source("127.0.1.3", ("127.0.1.1", 7000)) == ("127.0.1.3", 0)
    assert dial_source("127.0.0.1", ("127.0.0.1", 7000)) == ("127.0.0.1", 0)
    assert dial_source("0.0.0.0", ("127.0.1.1", 7000)) is None  # listening everywhere: the kernel picks
    assert dial_source("127.0.1.3", ("10.1.2.3", 7000)) is None  # a loopback source cannot reach off the host
    assert dial_source("", ("127.0.1.1", 7000)) is None
    assert dial_source("127.0.1.3", ("localhost", 7000)) is None


# -- a real network on per-node addresses (everywhere) ----------------------------------------------------
def start_nodes(deployment: Deployment, run_dir: Path) -> dict[int, subprocess.Popen[bytes]]:
    """One ``popbench node`` process per validator on its deployment socket, dialling its topology peers."""
    procs: dict[int, subprocess.Popen[bytes]] = {}
    for node in range(deployment.count):
        sock = deployment.sockets[node]
        args = [POPBENCH, "node", "--genesis", str(run_dir / "genesis.json"), "--node-id", str(node),
                "--data-dir", str(run_dir / "data"), "--listen-fd", str(sock.fileno())]  # fmt: skip
        for peer in deployment.topology.dial[node]:
            host, port = deployment.address(peer)
            args += ["--peer", f"{host}:{port}"]
        log = open(run_dir / f"node-{node}.log", "ab")  # noqa: SIM115 (the process owns it)
        procs[node] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, pass_fds=(sock.fileno(),))
    return procs


def stop_nodes(procs: dict[int, subprocess.Popen[bytes]]) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs.values():
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


async def node_status(deployment: Deployment, node: int) -> AnyStatus | None:
    try:
        client = await NodeClient.connect(*deployment.address(node), chain_id=deployment.genesis.chain_id)
    except ClientError:
        return None
    try:
        return await client.status(5.0)
    except ClientError:
        return None
    finally:
        client.close()


async def wait_for(deployment: Deployment, check: Callable[[list[AnyStatus | None]], bool], what: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    statuses: list[AnyStatus | None] = []
    while time.monotonic() < deadline:
        statuses = list(await asyncio.gather(*(node_status(deployment, n) for n in range(deployment.count))))
        if check(statuses):
            return
        await asyncio.sleep(0.1)  # polling period of a condition with a deadline
    raise AssertionError(f"timed out waiting for {what}: {statuses}")


async def submit(deployment: Deployment, node: int, count: int, first: int = 0) -> None:
    """``count`` fresh proofs (payloads ``first`` on) to ``node``; each must be ACCEPTED."""
    bits = deployment.genesis.params.min_work_bits
    chain_id = deployment.genesis.chain_id
    proofs = [Proof.create(OWNER, chain_id, i.to_bytes(8, "big"), bits, 7, time.time_ns()) for i in range(first, first + count)]
    client = await NodeClient.connect(*deployment.address(node), chain_id=deployment.genesis.chain_id)
    results: dict[int, RejectReason] = {}
    done = asyncio.get_running_loop().create_future()

    def on_result(result: Any) -> None:
        results[result.request_id] = result.reason
        if len(results) == count and not done.done():
            done.set_result(None)

    client.on_result = on_result
    for index, proof in enumerate(proofs):
        client.submit(index, ItemKind.PROOF, proof.encode())
    try:
        await asyncio.wait_for(done, 60)
    finally:
        client.close()
    assert set(results.values()) == {RejectReason.ACCEPTED}


def node_links(pid: int, hosts: set[str]) -> list[tuple[str, str]]:
    """(local ip, remote ip) of each established TCP connection of ``pid`` to another node's address."""
    conns = psutil.Process(pid).net_connections(kind="tcp")
    return [(c.laddr.ip, c.raddr.ip) for c in conns if c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.ip in hosts]


def test_four_nodes_on_their_own_addresses_link_from_them_and_commit(tmp_path: Path) -> None:
    deployment = deploy(tiny_profile(), tmp_path, loopback=PER_NODE)
    procs = start_nodes(deployment, tmp_path)
    try:

        async def scenario() -> None:
            await wait_for(deployment, lambda s: all(x is not None and x.peers >= 3 for x in s), "a full mesh")
            await submit(deployment, 1, 40)
            await wait_for(deployment, lambda s: all(x is not None and x.counters.proofs_committed >= 40 for x in s), "40 committed")

        asyncio.run(scenario())
        hosts = set(deployment.hosts().values())
        for node, proc in procs.items():
            links = node_links(proc.pid, hosts)
            assert len(links) >= 3, links
            # every link of node i, dialled or accepted, has node i's own address at this end
            assert {local for local, _ in links} == {node_host(node)}, links
    finally:
        stop_nodes(procs)
        deployment.close()
    for node in range(4):
        assert "Traceback" not in (tmp_path / f"node-{node}.log").read_text(errors="replace")


HARNESS_PROFILE = """name = "kernel-run"
[network]
nodes = 4
[workload]
rate = 50.0
[run]
duration_s = {duration}
warmup_s = 1.0
cooldown_s = 0.5
drain_s = 10.0
status_interval_s = 0.5
seed = {seed}
[[faults]]
at_s = 2.0
kind = "partition"
target = "node:3"
duration_s = {length}
mechanism = "kernel"
[[faults]]
at_s = 2.0
kind = "link"
target = "node:1"
duration_s = {length}
loss = 0.05
mechanism = "kernel"
"""


def harness_run(tmp_path: Path, duration: float, length: float, mechanism: str = "kernel") -> list[str]:
    profile = tmp_path / "kernel-run.toml"
    text = HARNESS_PROFILE.format(duration=duration, length=length, seed=os.getpid() % 10_000)
    profile.write_text(text.replace('mechanism = "kernel"', f'mechanism = "{mechanism}"'))
    return [POPBENCH, "run", "--profile", str(profile), "--output", str(tmp_path / "run")]


def test_a_harness_run_says_which_mechanism_ran_its_network_faults(any_bench_lock: None, tmp_path: Path) -> None:
    """As root with iptables: the kernel, on per-node addresses; elsewhere the nodes' transport, saying why.
    Either way safety holds, nothing acknowledged is lost, and no rule outlives the run."""
    reason = kernel_reason()
    before = kernel_state() if reason is None else None
    done = subprocess.run(harness_run(tmp_path, 8.0, 3.0), capture_output=True, text=True, timeout=240, check=False)
    log = f"exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert (tmp_path / "run" / "report.json").is_file(), log
    report = orjson.loads((tmp_path / "run" / "report.json").read_bytes())
    applied = [f for f in report["faults"] if f["action"] == "apply"]
    assert [f["kind"] for f in applied] == ["partition", "link"], log
    if reason is None:
        assert [f["mechanism"] for f in applied] == ["kernel", "kernel"] and not any(f["note"] for f in applied), applied
        assert node_host(3) in (tmp_path / "run" / "nodes.json").read_text()  # per-node addresses, for the rules
        assert kernel_state() == before
    else:
        assert all(f["mechanism"] == "transport" and reason in f["note"] for f in applied), (reason, applied)
    safety = report["metrics"]["stability"]["safety"]
    assert safety["agree"] and safety["accounting"]["unexpected"] == 0, (safety, log)
    assert safety["accounting"]["lost"] == 0, (safety, log)


def test_a_transport_partition_holds_what_crosses_it_and_loses_nothing_acknowledged(any_bench_lock: None, tmp_path: Path) -> None:
    """The nodes' own emulation of a partition holds a cut link's frames for the heal, as TCP does across a
    kernel partition. It used to drop them: the items node 3 acknowledged while cut off were gossiped into
    nothing, and 37 of 400 acknowledged items were lost in each of two runs (seeds 1 and 2)."""
    done = subprocess.run(harness_run(tmp_path, 8.0, 3.0, "transport"), capture_output=True, text=True, timeout=240, check=False)
    log = f"exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert (tmp_path / "run" / "report.json").is_file(), log
    report = orjson.loads((tmp_path / "run" / "report.json").read_bytes())
    applied = [f for f in report["faults"] if f["action"] == "apply"]
    assert [(f["kind"], f["mechanism"]) for f in applied] == [("partition", "transport"), ("link", "transport")], log
    accounting = report["metrics"]["stability"]["safety"]["accounting"]
    assert accounting["acknowledged"] > 0 and accounting["drained"], (accounting, log)
    assert (accounting["lost"], accounting["unexpected"], accounting["duplicated"]) == (0, 0, 0), (accounting, log)
    assert accounting["committed"] >= accounting["acknowledged"], (accounting, log)


@needs_kernel
def test_ctrl_c_during_a_kernel_partition_of_a_harness_run_leaves_no_rule(bench_lock: None, tmp_path: Path) -> None:
    before = kernel_state()
    proc = subprocess.Popen(harness_run(tmp_path, 30.0, 20.0), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the run's console: wait for the partition to be in force
            seen.append(line)
            if line.startswith("fault: partition"):
                break
        assert seen and "(kernel)" in seen[-1], "".join(seen[-30:])
        assert kernel_state() != before
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
        seen.append(rest)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert kernel_state() == before, "".join(seen[-30:])


@pytest.mark.skipif(not hasattr(Network, "loopback"), reason="the profile key network.loopback does not exist yet")
def test_a_harness_run_with_per_node_addresses_passes(tmp_path: Path) -> None:
    profile = tmp_path / "per-node.toml"
    profile.write_text('name = "per-node"\n[network]\nnodes = 4\nloopback = "per-node"\n[workload]\nrate = 100.0\n'
                       "[run]\nduration_s = 4.0\nwarmup_s = 1.0\ncooldown_s = 0.5\ndrain_s = 5.0\nseed = 3\n")  # fmt: skip
    run = [POPBENCH, "run", "--profile", str(profile), "--output", str(tmp_path / "run")]
    lock = ["flock", str(BENCH_LOCK)] if shutil.which("flock") else []
    done = subprocess.run([*lock, *run], capture_output=True, text=True, timeout=280, check=False)
    assert done.returncode in (0, 3), done.stdout + done.stderr  # 3: the shared host starved the load generator


# -- KernelNet against a fake command runner (everywhere) -------------------------------------------------
class FakeKernel:
    """Answers KernelNet's commands, keeping which chains and OUTPUT jumps exist; ``fail`` names a command
    that fails (with stderr "boom: no such thing")."""

    def __init__(self, fail: str | None = None) -> None:
        self.fail = fail
        self.ran: list[list[str]] = []
        self.chains: set[str] = set()
        self.jumps: set[str] = set()

    def __call__(self, argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        self.ran.append(argv)
        if self.fail is not None and self.fail in " ".join(argv):
            return subprocess.CompletedProcess(argv, 1, "", "boom: no such thing")
        ok = self._iptables(argv[3:]) if argv[0] == "iptables" else True
        return subprocess.CompletedProcess(argv, 0 if ok else 1, "", "")

    def _iptables(self, args: list[str]) -> bool:
        op, rest = args[0], args[1:]
        if op == "-C":
            return rest[-1] in self.jumps
        if op == "-S":
            return not rest or rest[0] in self.chains
        if op == "-N":
            self.chains.add(rest[0])
        elif op == "-X":
            self.chains.discard(rest[0])
        elif op == "-I":
            self.jumps.add(rest[-1])
        elif op == "-D" and rest[0] == "OUTPUT":
            self.jumps.discard(rest[-1])
        return True


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[..., FakeKernel]]:
    def install(fail: str | None = None) -> FakeKernel:
        runner = FakeKernel(fail)
        monkeypatch.setattr(kernel, "_execute", runner)
        monkeypatch.setattr(kernel, "_owner_file", lambda: tmp_path / "owner")
        return runner

    yield install


def test_cut_drops_both_directions_in_one_restore_and_uncut_deletes_them(fake: Callable[..., FakeKernel]) -> None:
    fake()
    with KernelNet(HOSTS, "unit") as net:
        net.cut([(1, 0), (0, 1)])  # one pair, however written
        net.cut([(0, 1)])  # already cut: nothing runs
        net.uncut([(0, 2)])  # not cut: nothing runs
        net.uncut([(0, 1)])
        commands = list(net.commands)
    assert commands[2:] == [
        "iptables -w 5 -N PB-unit",
        "iptables -w 5 -I OUTPUT 1 -j PB-unit",
        "iptables-restore -w 5 --noflush <<'EOF'\n*filter\n-A PB-unit -s 127.0.200.1/32 -d 127.0.200.2/32 -j DROP\n"
        "-A PB-unit -s 127.0.200.2/32 -d 127.0.200.1/32 -j DROP\nCOMMIT\nEOF",
        "iptables-restore -w 5 --noflush <<'EOF'\n*filter\n-D PB-unit -s 127.0.200.1/32 -d 127.0.200.2/32 -j DROP\n"
        "-D PB-unit -s 127.0.200.2/32 -d 127.0.200.1/32 -j DROP\nCOMMIT\nEOF",
    ]  # fmt: skip


def test_shape_builds_a_class_netem_two_filters_and_two_loss_rules_a_pair_and_close_drops_the_root(fake: Callable[..., FakeKernel]) -> None:
    fake()
    net = KernelNet(HOSTS, "unit")
    handle = net.shape([(0, 1)], delay_ms=100, jitter_ms=10, loss=0.05, rate_kbit=512)
    start = len(net.commands)
    lose = "-m statistic --mode random --probability 0.05 -j DROP"
    assert net.commands[-1] == (
        "iptables-restore -w 5 --noflush <<'EOF'\n*filter\n"
        f"-A PB-unit -s 127.0.200.1/32 -d 127.0.200.2/32 {lose}\n-A PB-unit -s 127.0.200.2/32 -d 127.0.200.1/32 {lose}\nCOMMIT\nEOF"
    )
    assert net.shaped == {handle: frozenset({(0, 1)})}
    with pytest.raises(HarnessError, match="already shaped"):
        net.shape([(1, 0)], delay_ms=5)
    net.close()
    net.close()  # idempotent
    tc = [c for c in net.commands if c.startswith("tc ")]
    assert tc[:3] == [
        "tc qdisc add dev lo root handle 7062: htb",
        f"tc class add dev lo parent 7062: classid 7062:{handle:x} htb rate 512000bit ceil 512000bit quantum 65536",
        f"tc qdisc add dev lo parent 7062:{handle:x} handle {handle:x}: netem limit 100000 delay 100ms 10ms",
    ]
    assert tc[3].count("filter add dev lo parent 7062: protocol ip prio 1 u32") == 2
    assert "match ip src 127.0.200.2/32 match ip dst 127.0.200.1/32" in tc[3]
    assert net.commands[start:] == [
        "tc qdisc del dev lo root handle 7062:",
        "iptables -w 5 -C OUTPUT -j PB-unit", "iptables -w 5 -D OUTPUT -j PB-unit",
        "iptables -w 5 -C OUTPUT -j PB-unit  # exit 1", "iptables -w 5 -S PB-unit",
        "iptables -w 5 -F PB-unit", "iptables -w 5 -X PB-unit",
    ]  # fmt: skip


def test_unshaping_the_last_shape_removes_the_root(fake: Callable[..., FakeKernel]) -> None:
    fake()
    with KernelNet(HOSTS, "unit") as net:
        first, second = net.shape([(0, 1)], rate_kbit=100), net.shape([(0, 2)], delay_ms=10)
        net.unshape(first)
        assert not any("root" in c and "del" in c for c in net.commands)
        net.unshape(second)
        assert net.commands[-3:] == [
            "tc filter del dev lo parent 7062: protocol ip prio 2", "tc class del dev lo classid 7062:2",
            "tc qdisc del dev lo root handle 7062:",
        ]  # fmt: skip
        with pytest.raises(HarnessError, match="no shaped links with handle 2"):
            net.unshape(second)


def test_a_loss_only_shape_is_iptables_rules_alone_and_unshape_deletes_them(fake: Callable[..., FakeKernel]) -> None:
    fake()
    with KernelNet(HOSTS, "unit") as net:
        start = len(net.commands)
        handle = net.shape([(0, 2)], loss=0.25)
        added = net.commands[start:]
        net.unshape(handle)
        removed = net.commands[start + len(added) :]
    assert len(added) == 1 and added[0].count("-A PB-unit") == 2 and "--probability 0.25 -j DROP" in added[0]
    assert removed == [added[0].replace("-A PB-unit", "-D PB-unit")]
    assert not any(c.startswith("tc ") for c in net.commands)  # no qdisc on lo for loss alone


def test_a_failing_command_raises_with_the_command_and_its_stderr(fake: Callable[..., FakeKernel]) -> None:
    fake(fail="iptables-restore")
    with KernelNet(HOSTS, "unit") as net, pytest.raises(HarnessError) as caught:
        net.cut([(0, 1)])
    assert "iptables-restore -w 5 --noflush" in str(caught.value) and "boom: no such thing" in str(caught.value)


def test_a_failed_start_undoes_what_it_did(fake: Callable[..., FakeKernel]) -> None:
    runner = fake(fail="-I OUTPUT")
    with pytest.raises(HarnessError, match="-I OUTPUT 1 -j PB-unit"):
        KernelNet(HOSTS, "unit")
    assert runner.ran[-1] == ["iptables", "-w", "5", "-X", "PB-unit"] and not runner.chains


def test_a_chain_left_by_a_crashed_run_of_the_tag_is_removed_first(fake: Callable[..., FakeKernel]) -> None:
    runner = fake()
    runner.chains.add("PB-unit")
    runner.jumps.add("PB-unit")
    with KernelNet(HOSTS, "unit") as net:
        assert net.commands[:6] == [
            "iptables -w 5 -C OUTPUT -j PB-unit", "iptables -w 5 -D OUTPUT -j PB-unit",
            "iptables -w 5 -C OUTPUT -j PB-unit  # exit 1", "iptables -w 5 -S PB-unit",
            "iptables -w 5 -F PB-unit", "iptables -w 5 -X PB-unit",
        ]  # fmt: skip


def test_bad_pairs_and_shapes_are_refused(fake: Callable[..., FakeKernel]) -> None:
    fake()
    with KernelNet(HOSTS, "unit") as net:
        for pairs in ([(0, 0)], [(0, 9)]):
            with pytest.raises(HarnessError, match="not a pair of distinct nodes"):
                net.cut(pairs)
        for kwargs in ({}, {"loss": 1.5}, {"delay_ms": -1.0}, {"rate_kbit": float("nan")}):
            with pytest.raises(HarnessError):
                net.shape([(0, 1)], **kwargs)
        with pytest.raises(HarnessError, match="at least one pair"):
            net.shape([], delay_ms=1)
        assert not net.shaped and not any("root" in c for c in net.commands)


def test_chain_names_are_valid_and_stable() -> None:
    assert chain_name("run-1") == "PB-run-1"
    long = chain_name("2026-05-09T12:00:00 smoke with a long name")
    assert long == chain_name("2026-05-09T12:00:00 smoke with a long name") and len(long) <= 28
    assert all(ch.isalnum() or ch in "_.-" for ch in long)


def test_why_the_kernel_path_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "share 127.0.0.1" in str(KernelNet.unavailable_reason({0: "127.0.0.1", 1: "127.0.0.1"}))
    assert "not an IPv4 loopback" in str(KernelNet.unavailable_reason({0: "10.0.0.1", 1: "127.0.1.2"}))
    monkeypatch.setattr(kernel.os, "geteuid", lambda: 1000)
    assert KernelNet.unavailable_reason(HOSTS) == "not running as root (iptables and tc need it)"
    monkeypatch.setattr(kernel.os, "geteuid", lambda: 0)
    monkeypatch.setattr(kernel.shutil, "which", lambda tool: None if tool == "tc" else f"/usr/sbin/{tool}")
    assert KernelNet.unavailable_reason(HOSTS) == "tc is not installed (apt-get install -y iproute2)"


# -- the skip path and the choice of mechanism (everywhere) ------------------------------------------------
def kernel_reason(netem: bool = False) -> str | None:
    return KernelNet.unavailable_reason(HOSTS, netem=netem)


def require_kernel() -> None:
    """Skip, saying why, unless the kernel path can run here (root, iptables, tc, a willing kernel)."""
    reason = kernel_reason()
    if reason is not None:
        pytest.skip(f"kernel path unavailable: {reason}")


def test_the_kernel_tests_skip_saying_why_when_not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel.os, "geteuid", lambda: 1000)
    with pytest.raises(pytest.skip.Exception, match=r"kernel path unavailable: not running as root"):
        require_kernel()


def test_the_kernel_tests_skip_saying_why_without_iptables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel.os, "geteuid", lambda: 0)
    monkeypatch.setattr(kernel.shutil, "which", lambda tool: None)
    with pytest.raises(pytest.skip.Exception, match=r"iptables is not installed \(apt-get install -y iptables\)"):
        require_kernel()


def fault_profile(*faults: dict[str, Any], nodes: int = 4) -> Profile:
    return profile_from_dict({"name": "kernel", "network": {"nodes": nodes}, "faults": list(faults)}, "test")


PARTITION = {"at_s": 1.0, "kind": "partition", "target": "node:3", "duration_s": 2.0, "mechanism": "kernel"}


def test_not_root_a_kernel_partition_is_emulated_by_the_nodes_and_says_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(kernel.os, "geteuid", lambda: 1000)
    profile = fault_profile(PARTITION)
    assert fault_net.kernel_loopback(profile) is None  # the profile's addresses: nothing needs per-node ones
    net = fault_net.net_faults(profile, tmp_path, dict, [(node_host(i), 7000 + i) for i in range(4)])
    detail = net.apply(0, profile.faults[0], [3])
    assert detail["mechanism"] == "transport" and "not running as root" in detail["note"]
    assert orjson.loads(faults_path(tmp_path, 3).read_bytes())["blocked"] == [0, 1, 2]  # the nodes do it instead
    net.close()
    assert orjson.loads(faults_path(tmp_path, 3).read_bytes())["blocked"] == []


def test_a_kernel_that_cannot_delay_leaves_delays_to_the_nodes_and_does_loss_and_partitions(
    fake: Callable[..., FakeKernel], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    runner = fake()
    monkeypatch.setattr(KernelNet, "unavailable_reason", staticmethod(lambda addresses, netem=True: None))
    monkeypatch.setattr(KernelNet, "cannot_delay_reason", staticmethod(lambda: "no netem here"))
    delay = {"at_s": 1.0, "kind": "link", "target": "node:1", "duration_s": 2.0, "delay_ms": 50.0}
    loss = {"at_s": 1.0, "kind": "link", "target": "node:2", "duration_s": 2.0, "loss": 0.1, "rate_kbit": 800.0}
    profile = fault_profile(PARTITION, delay, loss)
    assert fault_net.kernel_loopback(profile) == PER_NODE
    net = fault_net.net_faults(profile, tmp_path, dict, [(node_host(i), 7000 + i) for i in range(4)])
    assert [net.apply(i, f, [f.node])["mechanism"] for i, f in enumerate(profile.faults)] == ["kernel", "transport", "kernel"]
    assert "no netem here" in net.apply(3, profile.faults[1], [1])["note"]
    assert orjson.loads(faults_path(tmp_path, 1).read_bytes())["links"]["*"]["delay_ms"] == 50.0
    net.close()
    assert not runner.chains and not runner.jumps


def test_a_transport_fault_never_touches_the_kernel(tmp_path: Path) -> None:
    profile = fault_profile({**PARTITION, "mechanism": "transport"})
    assert fault_net.kernel_loopback(profile) is None
    net = fault_net.net_faults(profile, tmp_path, dict, [("127.0.0.1", 7000 + i) for i in range(4)])
    assert net.kernel is None and net.apply(0, profile.faults[0], [3]) == {"mechanism": "transport", "pairs": 3}
    net.close()


# -- the real kernel (root, iptables and tc) ------------------------------------------------------------


@pytest.fixture
def real_kernel() -> None:
    require_kernel()


@pytest.fixture
def bench_lock(real_kernel: None, any_bench_lock: None) -> None:
    """The kernel path, and the benchmark lock: a qdisc on lo slows every loopback packet, a cut on the
    per-node plan's addresses would cut a benchmark's nodes."""


@pytest.fixture
def any_bench_lock() -> Iterator[None]:
    """The benchmark lock that runs are wrapped in (``flock /tmp/popbench-bench.lock``), held by the test."""
    # read-only: flock needs no write access, and the lock file may be another user's (root's benchmarks)
    with os.fdopen(os.open(BENCH_LOCK, os.O_RDONLY | os.O_CREAT, 0o666)) as handle:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.skip(f"{BENCH_LOCK} stayed held for {LOCK_WAIT_S:.0f} s (a benchmark is running)")
                time.sleep(1.0)  # waiting for another run to finish
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def kernel_state() -> tuple[str, str]:
    rules = subprocess.run(["iptables", "-w", "5", "-S"], capture_output=True, text=True, check=True).stdout
    qdiscs = subprocess.run(["tc", "qdisc", "show", "dev", "lo"], capture_output=True, text=True, check=True).stdout
    return rules, qdiscs


async def echo_server(host: str) -> asyncio.Server:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(echo, host, 0)


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def dial(source: str, server: asyncio.Server, timeout_s: float = 5.0) -> Stream:
    host, port = server.sockets[0].getsockname()[:2]
    return await asyncio.wait_for(asyncio.open_connection(host, port, local_addr=(source, 0)), timeout_s)


async def round_trip(stream: Stream, size: int = 1, timeout_s: float = 10.0) -> float:
    reader, writer = stream
    started = time.perf_counter()
    writer.write(b"x" * size)
    await writer.drain()
    await asyncio.wait_for(reader.readexactly(size), timeout_s)
    return time.perf_counter() - started


def close_all(servers: dict[int, asyncio.Server]) -> None:
    for server in servers.values():
        server.close()


async def fastest_round_trip(stream: Stream, tries: int = 5) -> float:
    return min([await round_trip(stream) for _ in range(tries)])


@needs_kernel
def test_cut_stops_one_pair_both_ways_and_uncut_lets_it_talk_again(real_kernel: None) -> None:
    async def scenario(net: KernelNet) -> None:
        servers = {node: await echo_server(HOSTS[node]) for node in HOSTS}
        a_b, a_c = await dial(HOSTS[0], servers[1]), await dial(HOSTS[0], servers[2])
        await round_trip(a_b)
        net.cut([(0, 1)])
        a_b[1].write(b"held")  # on a link that was up: must not arrive while cut
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(a_b[0].readexactly(4), 1.0)
        for source, target in ((0, 1), (1, 0)):  # nor may a new link be made, either way
            with pytest.raises((TimeoutError, OSError)):
                await dial(HOSTS[source], servers[target], timeout_s=1.0)
        assert await round_trip(a_c, timeout_s=2.0) < 1.0  # another pair of the same node still works
        assert await round_trip(await dial(HOSTS[1], servers[2]), timeout_s=2.0) < 1.0
        net.uncut([(0, 1)])
        assert await asyncio.wait_for(a_b[0].readexactly(4), 20.0) == b"held"  # TCP resent it
        assert await round_trip(await dial(HOSTS[1], servers[0])) < 1.0
        close_all(servers)

    with KernelNet(HOSTS, f"test-cut-{os.getpid()}") as net:
        asyncio.run(scenario(net))


@needs_kernel
def test_loss_drops_that_share_of_one_pairs_packets_and_no_other(bench_lock: None) -> None:
    """2,000 datagrams 0 -> 1 at loss 0.3 and 2,000 0 -> 2 unshaped: the kernel's own counter of the loss
    rule says how many it dropped (about 600; 450-750 is more than 6 standard deviations either way), as
    many sendto calls failed (EPERM), and exactly the rest arrive; every datagram of the other pair does."""
    sent = 2000
    with KernelNet(HOSTS, f"test-loss-{os.getpid()}") as net:
        receivers = {node: socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for node in (1, 2)}
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for node, sock in receivers.items():
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)  # room for every datagram
                sock.bind((HOSTS[node], 0))
                sock.settimeout(10.0)
            sender.bind((HOSTS[0], 0))
            handle = net.shape([(0, 1)], loss=0.3)
            refused = {1: 0, 2: 0}
            for index in range(sent):
                for node, sock in receivers.items():
                    try:
                        sender.sendto(index.to_bytes(4, "big"), sock.getsockname())
                    except PermissionError:  # a datagram dropped in OUTPUT fails its sendto with EPERM
                        refused[node] += 1
            dropped = loss_rule_drops(net.chain, HOSTS[0], HOSTS[1])
            assert 450 <= dropped <= 750 and refused == {1: dropped, 2: 0}, (dropped, refused)
            received = {
                node: drain(sock, expected) for node, sock, expected in ((1, receivers[1], sent - dropped), (2, receivers[2], sent))
            }
            assert received == {1: sent - dropped, 2: sent}
            net.unshape(handle)
            sender.sendto(b"back", receivers[1].getsockname())
            assert receivers[1].recv(16) == b"back"
        finally:
            sender.close()
            for sock in receivers.values():
                sock.close()


def loss_rule_drops(chain: str, src: str, dst: str) -> int:
    """Packets the kernel dropped by the loss rule from ``src`` to ``dst`` (its iptables counter)."""
    listing = subprocess.run(["iptables", "-w", "5", "-L", chain, "-v", "-x", "-n"], capture_output=True, text=True, check=True).stdout
    for line in listing.splitlines():
        fields = line.split()
        if "statistic" in line and src in fields and dst in fields and fields.index(src) < fields.index(dst):
            return int(fields[0])
    raise AssertionError(f"no loss rule {src} -> {dst} in\n{listing}")


def drain(sock: socket.socket, expected: int) -> int:
    """Receive ``expected`` datagrams (a timeout raises: some went missing), then check nothing more came."""
    for _ in range(expected):
        sock.recv(16)
    sock.setblocking(False)
    extra = 0
    while True:
        try:
            sock.recv(16)
        except BlockingIOError:
            return expected + extra
        extra += 1


@needs_kernel
def test_a_cut_stops_real_nodes_and_the_cut_off_one_catches_up_after_uncut(bench_lock: None, tmp_path: Path) -> None:
    """Four real validators on per-node addresses; node 3 cut off from 0, 1 and 2 by the kernel: the
    three (n - f) keep committing while node 3's height stands still, though the harness (dialling from
    127.0.0.1) still reaches it; after uncut node 3 reaches their height."""
    deployment = deploy(tiny_profile(), tmp_path, loopback=PER_NODE)
    procs = start_nodes(deployment, tmp_path)
    try:

        async def scenario(net: KernelNet) -> None:
            await wait_for(deployment, lambda s: all(x is not None and x.peers >= 3 for x in s), "a full mesh")
            await submit(deployment, 1, 10)
            await wait_for(deployment, lambda s: all(x is not None and x.counters.proofs_committed >= 10 for x in s), "10 committed")
            net.cut([(0, 3), (1, 3), (2, 3)])
            at_cut = [x.height for x in await statuses(deployment)]
            for batch in range(1, 6):  # a block each at least
                await submit(deployment, batch % 3, 10, first=10 * batch)  # to 0, 1, 2: the connected side
                target = 10 + 10 * batch
                await wait_for(deployment, committed_on_three(target), f"{target} committed on 0-2", timeout_s=120.0)
            during = await statuses(deployment)
            assert min(x.height for x in during[:3]) >= max(at_cut) + 5, (at_cut, during)
            assert during[3].height <= at_cut[3] + 1, (at_cut, during)  # at most a block already in flight
            net.uncut([(0, 3), (1, 3), (2, 3)])
            top = max(x.height for x in during)
            await wait_for(deployment, lambda s: s[3] is not None and s[3].height >= top, f"node 3 back at height {top}", timeout_s=120.0)

        with KernelNet(deployment.hosts(), f"test-nodes-{os.getpid()}") as net:
            asyncio.run(scenario(net))
    finally:
        stop_nodes(procs)
        deployment.close()


def committed_on_three(target: int) -> Callable[[list[AnyStatus | None]], bool]:
    return lambda s: all(x is not None and x.counters.proofs_committed >= target for x in s[:3])


async def statuses(deployment: Deployment) -> list[AnyStatus]:
    answers = await asyncio.gather(*(node_status(deployment, n) for n in range(deployment.count)))
    assert all(answer is not None for answer in answers), answers
    return [answer for answer in answers if answer is not None]


@needs_kernel
def test_a_rate_cap_slows_only_the_shaped_pair(bench_lock: None) -> None:
    size = 100_000  # 0.8 Mbit each way: 1 s at 800 kbit/s, a millisecond unshaped

    async def scenario(net: KernelNet) -> None:
        servers = {node: await echo_server(HOSTS[node]) for node in (1, 2)}
        a_b, a_c = await dial(HOSTS[0], servers[1]), await dial(HOSTS[0], servers[2])
        assert await round_trip(a_b, size) < 0.5
        handle = net.shape([(0, 1)], rate_kbit=800)
        assert await round_trip(a_b, size, timeout_s=30.0) > 0.5
        assert await round_trip(a_c, size) < 0.5
        net.unshape(handle)
        assert await round_trip(a_b, size) < 0.5
        close_all(servers)

    with KernelNet(HOSTS, f"test-rate-{os.getpid()}") as net:
        asyncio.run(scenario(net))


@needs_kernel
def test_a_delay_slows_the_round_trip_of_the_shaped_pair(bench_lock: None) -> None:
    reason = kernel_reason(netem=True)
    if reason is not None:
        pytest.skip(f"kernel path cannot delay: {reason}")

    async def scenario(net: KernelNet) -> None:
        servers = {node: await echo_server(HOSTS[node]) for node in (1, 2)}
        a_b, a_c = await dial(HOSTS[0], servers[1]), await dial(HOSTS[0], servers[2])
        assert await fastest_round_trip(a_b) < 0.05
        handle = net.shape([(0, 1)], delay_ms=100)
        assert await round_trip(a_b) > 0.15  # 100 ms each way
        assert await fastest_round_trip(a_c) < 0.05
        net.unshape(handle)
        assert await fastest_round_trip(a_b) < 0.05
        close_all(servers)

    with KernelNet(HOSTS, f"test-delay-{os.getpid()}") as net:
        asyncio.run(scenario(net))


@needs_kernel
def test_close_leaves_iptables_and_tc_as_they_were(bench_lock: None) -> None:
    before = kernel_state()
    net = KernelNet(HOSTS, f"test-close-{os.getpid()}")
    net.cut([(0, 1), (1, 2)])
    net.shape([(0, 2)], rate_kbit=1000)
    during = kernel_state()
    assert net.chain in during[0] and "7062:" in during[1]
    net.close()
    assert kernel_state() == before
    net.close()
    assert kernel_state() == before


KEEP_RULES = """
import sys, time
from harness.faults.kernel import KernelNet
net = KernelNet({hosts!r}, {tag!r})
net.cut([(0, 1)])
net.shape([(1, 2)], rate_kbit=1000)
print("ready", flush=True)
if sys.argv[1] == "hang":
    time.sleep(120)
"""


def rules_process(tag: str, how: str) -> subprocess.Popen[str]:
    code = KEEP_RULES.format(hosts=HOSTS, tag=tag)
    return subprocess.Popen([sys.executable, "-c", code, how], stdout=subprocess.PIPE, text=True, cwd=ROOT)


@needs_kernel
def test_a_run_that_exits_without_closing_leaves_no_rule(bench_lock: None) -> None:
    before = kernel_state()
    proc = rules_process(f"test-exit-{os.getpid()}", "exit")
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "ready" in output
    assert kernel_state() == before


@needs_kernel
def test_ctrl_c_leaves_no_rule(bench_lock: None) -> None:
    before = kernel_state()
    proc = rules_process(f"test-sigint-{os.getpid()}", "hang")
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        assert kernel_state() != before
        proc.send_signal(signal.SIGINT)  # KeyboardInterrupt in the sleep: the interpreter exits, atexit runs
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode != 0  # it was interrupted, not finished
    assert kernel_state() == before


@needs_kernel
def test_a_crashed_runs_rules_are_cleared_by_the_next_of_its_tag(bench_lock: None) -> None:
    before = kernel_state()
    tag = f"test-crash-{os.getpid()}"
    proc = rules_process(tag, "hang")
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    finally:
        proc.kill()  # SIGKILL: no atexit, the rules stay
        proc.wait(timeout=10)
    left = kernel_state()
    assert chain_name(tag) in left[0] and "7062:" in left[1]
    with KernelNet(HOSTS, tag) as net:
        assert "DROP" not in "\n".join(line for line in kernel_state()[0].splitlines() if net.chain in line)
        assert "7062:" not in kernel_state()[1]
    assert kernel_state() == before


def test_sockets_bind_on_the_test_addresses() -> None:
    """All of 127/8 is local here, as the kernel tests (and per-node runs) assume."""
    for host in HOSTS.values():
        with socket.socket() as sock:
            sock.bind((host, 0))
