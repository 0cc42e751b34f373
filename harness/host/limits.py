"""Host limits: processes, open files and memory for a run of N nodes, checked before anything is forked.

A run that the host cannot carry must be refused with the numbers before the first fork, not fail halfway
(a fork that hits ``pids.max``, a node that hits ``RLIMIT_NOFILE`` at its 500th link, the OOM killer at
node 900). :func:`check_host` compares what a run needs (:class:`HostNeeds`) with what the host has
(:class:`HostFacts`, read by :func:`read_host`) and raises :class:`HarnessError` naming every limit that
falls short, each with both numbers and what to change; otherwise it returns one note per check for the
report. The rules and the per-node estimates: docs/supervisor.md, "Host checks".
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from popbench.errors import HarnessError

# Memory of one validator: its private pages (USS; measured per run in resources.uss_per_node_mib) plus,
# per link, the kernel's socket (both ends' buffers, a few KiB idle, up to the autotuned size under load)
# and the node's own connection objects. Measured at N = 100 (docs/metrics.md, "Where a node's memory
# goes"): median USS 16-18 MiB, max 27 MiB under load before issue 16's lean-node work; 9-13 MiB median,
# 15 MiB max after it (docs/memory.md), so 16 MiB a node, with the links' share on top.
NODE_BASE_MIB = 16.0
NODE_PER_LINK_KIB = 16.0
HARNESS_BASE_MIB = 256.0  # the supervisor, the collector and their buffers
DRIVER_MIB = 128.0  # a driver holds its whole pre-signed plan
FDS_PER_NODE_BASE = 16  # a node's database, its WAL and shm, the listening socket, the event log, stdio ...
TASKS_SLACK = 64  # the harness's own helpers (calibration, kernel fault commands), and a margin
CGROUP_ROOTS = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))


@dataclass(frozen=True)
class HostNeeds:
    """What one run of ``nodes`` processes, each holding ``links_per_node`` peer links, needs of the host."""

    nodes: int
    drivers: int = 1
    miners: int = 0
    links_per_node: int | None = None  # None: a full mesh (nodes - 1)

    @property
    def links(self) -> int:
        return self.nodes - 1 if self.links_per_node is None else self.links_per_node

    @property
    def tasks(self) -> int:
        """Processes (each single-threaded) the run forks, plus the supervisor and a margin."""
        return self.nodes + self.drivers + self.miners + 1 + TASKS_SLACK

    @property
    def fds_per_process(self) -> int:
        """Descriptors of the busiest process: the supervisor (a socket, a pipe and a status link per
        node) or a node (a link per peer, a connection per driver and miner, its files)."""
        supervisor = 3 * self.nodes + 4 * self.drivers + 64
        node = self.links + self.drivers + self.miners + FDS_PER_NODE_BASE
        return max(supervisor, node)

    @property
    def fds_total(self) -> int:
        """Descriptors of the whole run at once: every node's and the supervisor's (the kernel's fs.file-max)."""
        node = self.links + self.drivers + self.miners + FDS_PER_NODE_BASE
        return self.nodes * node + 3 * self.nodes + 4 * self.drivers + 64

    @property
    def node_mib(self) -> float:
        return NODE_BASE_MIB + self.links * NODE_PER_LINK_KIB / 1024

    @property
    def memory_mib(self) -> float:
        return self.nodes * self.node_mib + HARNESS_BASE_MIB + self.drivers * DRIVER_MIB


@dataclass(frozen=True)
class Headroom:
    """One limit on processes: how many the limit allows, how many are in use now, where it is set."""

    name: str
    limit: int
    in_use: int
    fix: str

    @property
    def free(self) -> int:
        return self.limit - self.in_use


@dataclass
class HostFacts:
    """The host's limits as this process sees them (:func:`read_host`; tests build their own)."""

    tasks: list[Headroom] = field(default_factory=list)
    open_files_soft: int = 0
    open_files_hard: int = 0  # resource.RLIM_INFINITY when unlimited
    file_max: int | None = None  # fs.file-max: descriptors the whole system may hold
    files_open: int = 0  # fs.file-nr's allocated descriptors now
    memory_available_mib: float = 0.0
    memory_source: str = "MemAvailable"


def read_host() -> HostFacts:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    facts = HostFacts(open_files_soft=soft, open_files_hard=hard)
    facts.tasks = _task_limits()
    file_nr = _read_ints(Path("/proc/sys/fs/file-nr"))
    if len(file_nr) == 3:
        facts.files_open, facts.file_max = file_nr[0], file_nr[2]
    facts.memory_available_mib = psutil.virtual_memory().available / 2**20
    cgroup_free = _cgroup_memory_free()
    if cgroup_free is not None and cgroup_free / 2**20 < facts.memory_available_mib:
        facts.memory_available_mib, facts.memory_source = cgroup_free / 2**20, "the memory cgroup's limit less its usage"
    return facts


def check_host(needs: HostNeeds, facts: HostFacts | None = None) -> list[str]:
    """Notes, one per check, when the host can carry the run; else HarnessError listing every shortfall.

    Raises the soft open-files limit towards the hard one when the run needs more (that is not a fork)."""
    facts = read_host() if facts is None else facts
    short = [f"processes: {needs.tasks:,} needed ({needs.nodes:,} nodes, {needs.drivers} drivers, {needs.miners} "
             f"miners, the supervisor and {TASKS_SLACK} spare) but {limit.name} allows {limit.limit:,} and "
             f"{limit.in_use:,} are in use ({limit.free:,} free); {limit.fix}"
             for limit in facts.tasks if needs.tasks > limit.free]  # fmt: skip
    notes: list[str] = []
    tightest = min(facts.tasks, key=lambda limit: limit.free, default=None)
    if tightest is not None:
        notes.append(f"processes: {needs.tasks:,} needed, {tightest.free:,} free under {tightest.name}")
    _check_open_files(needs, facts, short)
    if needs.memory_mib > facts.memory_available_mib:
        short.append(f"memory: {needs.nodes:,} nodes need about {needs.memory_mib:,.0f} MiB ({needs.node_mib:.1f} MiB "
                     f"each for {needs.links:,} links, plus {HARNESS_BASE_MIB + needs.drivers * DRIVER_MIB:,.0f} MiB "
                     f"for the harness) but {facts.memory_available_mib:,.0f} MiB is available "
                     f"({facts.memory_source})")  # fmt: skip
    if short:
        raise HarnessError(f"this host cannot carry {needs.nodes:,} nodes; nothing was started:\n  - "
                           + "\n  - ".join(short) + "\nrun fewer nodes, or raise the limits named")  # fmt: skip
    notes.append(raise_open_files(needs.fds_per_process, facts))
    notes.append(f"memory: about {needs.memory_mib:,.0f} MiB needed of {facts.memory_available_mib:,.0f} MiB available")
    return notes


def _check_open_files(needs: HostNeeds, facts: HostFacts, short: list[str]) -> None:
    needed, hard = needs.fds_per_process, facts.open_files_hard
    if hard != resource.RLIM_INFINITY and needed > hard:
        short.append(f"open files: the busiest process needs about {needed:,} descriptors ({needs.links:,} links "
                     f"per node, 3 per node in the supervisor) but the hard limit (RLIMIT_NOFILE) is {hard:,}; "
                     f"raise it (ulimit -Hn, LimitNOFILE=, docker --ulimit nofile=)")  # fmt: skip
    if facts.file_max is not None and needs.fds_total > facts.file_max - facts.files_open:
        short.append(f"open files in all: the run holds about {needs.fds_total:,} descriptors at once but fs.file-max "
                     f"is {facts.file_max:,} with {facts.files_open:,} open; raise it (sysctl -w fs.file-max=...)")  # fmt: skip


def raise_open_files(needed: int, facts: HostFacts | None = None) -> str:
    """Raise the soft RLIMIT_NOFILE towards the hard limit when ``needed``; a note of what was done."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE) if facts is None else (facts.open_files_soft, facts.open_files_hard)
    if needed <= soft:
        return f"open files: {needed:,} needed, limit {soft:,}"
    ceiling = hard if hard != resource.RLIM_INFINITY else needed * 2
    if needed > ceiling:
        raise HarnessError(f"this run needs about {needed:,} open files per process but the hard limit is {hard:,}; "
                           f"raise it (ulimit -Hn) or run fewer nodes")  # fmt: skip
    new_soft = min(ceiling, max(needed * 2, soft))
    resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
    return f"open files: raised the soft limit from {soft:,} to {new_soft:,} (needed about {needed:,})"


def fds_needed(nodes: int, drivers: int) -> int:
    """Descriptors of the busiest process of a full mesh (kept for harness/multihost/host.py)."""
    return HostNeeds(nodes, drivers).fds_per_process


# -- reading the host ----------------------------------------------------------------------------------
def _task_limits() -> list[Headroom]:
    """Every limit on how many more tasks (processes and threads) this process's user may start."""
    limits: list[Headroom] = []
    tasks_now = _tasks_on_host()
    pid_max = _read_ints(Path("/proc/sys/kernel/pid_max"))
    if pid_max and tasks_now is not None:
        limits.append(Headroom("kernel.pid_max", pid_max[0], tasks_now, "raise it (sysctl -w kernel.pid_max=...)"))
    threads_max = _read_ints(Path("/proc/sys/kernel/threads-max"))
    if threads_max and tasks_now is not None:
        limits.append(Headroom("kernel.threads-max", threads_max[0], tasks_now, "raise it (sysctl -w kernel.threads-max=...)"))
    limits += _cgroup_pids()
    soft, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    if soft != resource.RLIM_INFINITY and os.geteuid() != 0:  # not enforced for root (CAP_SYS_RESOURCE)
        limits.append(Headroom("RLIMIT_NPROC (ulimit -u)", soft, _own_user_tasks(), "raise it (ulimit -u)"))
    return limits


def _tasks_on_host() -> int | None:
    """Tasks (threads) now: /proc/loadavg's fourth field is ``running/total``."""
    try:
        return int(Path("/proc/loadavg").read_text().split()[3].split("/")[1])
    except (OSError, IndexError, ValueError):
        return None


def _own_user_tasks() -> int:
    uid = os.getuid()
    total = 0
    for proc in psutil.process_iter(["uids", "num_threads"]):
        uids, threads = proc.info["uids"], proc.info["num_threads"]
        if uids is not None and uids.real == uid:
            total += threads or 1
    return total


def _cgroup_dirs(controller: str) -> list[Path]:
    """This process's cgroup directory for ``controller`` and its ancestors (v2, or v1 with that controller)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    found: list[Path] = []
    for line in lines:
        _, controllers, relative = line.split(":", 2)
        if controllers == "" or controller in controllers.split(","):
            bases = list(CGROUP_ROOTS) if controllers == "" else [CGROUP_ROOTS[0] / controller]
            for base in bases:
                here = base / relative.lstrip("/")
                while True:
                    if here.is_dir():
                        found.append(here)
                    if here == base:
                        break
                    here = here.parent
    return found


def _cgroup_pids() -> list[Headroom]:
    limits: list[Headroom] = []
    for directory in _cgroup_dirs("pids"):
        maximum, current = _read_text(directory / "pids.max"), _read_ints(directory / "pids.current")
        if maximum and maximum != "max" and maximum.isdigit() and current:
            limits.append(Headroom(f"the pids cgroup {directory} (pids.max)", int(maximum), current[0],
                                   "raise its pids.max (docker --pids-limit, systemd TasksMax=)"))  # fmt: skip
    return limits


def _cgroup_memory_free() -> int | None:
    """Bytes the tightest memory cgroup above us still allows, or None when none limits us."""
    free: list[int] = []
    for directory in _cgroup_dirs("memory"):
        for limit_name, usage_name in (("memory.max", "memory.current"), ("memory.limit_in_bytes", "memory.usage_in_bytes")):
            limit, usage = _read_ints(directory / limit_name), _read_ints(directory / usage_name)
            if limit and usage and limit[0] < 2**60:  # v1 says "no limit" with a huge number
                free.append(limit[0] - usage[0])
    return min(free) if free else None


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _read_ints(path: Path) -> list[int]:
    try:
        return [int(word) for word in _read_text(path).split()]
    except ValueError:
        return []


def check_memory(nodes: int, per_node_mib: float | None = None) -> str:
    """Memory alone, for a caller that has not moved to :func:`check_host` yet (a full mesh of ``nodes``)."""
    needs = HostNeeds(nodes)
    available_mib = psutil.virtual_memory().available / 2**20
    needed_mib = nodes * (needs.node_mib if per_node_mib is None else per_node_mib)
    if needed_mib > available_mib:
        raise HarnessError(f"{nodes:,} nodes need about {needed_mib:,.0f} MiB but only {available_mib:,.0f} MiB "
                           f"is available: run fewer nodes")  # fmt: skip
    return f"memory: about {needed_mib:,.0f} MiB needed of {available_mib:,.0f} MiB available"
