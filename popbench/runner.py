"""Run one node process in the foreground: a fresh uvloop loop, signal handling, periodic status.

Used by ``popbench node`` and by the harness's node children (after fork, a child never reuses the
supervisor's loop: it builds its own here). The loop counts every exception that reaches it
(popbench.loop_exceptions); the count is in the node's STATUS.
"""

from __future__ import annotations

import asyncio
import cProfile
import ctypes
import os
import signal
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import uvloop

from popbench.loop_exceptions import install_exception_counter
from popbench.node_config import NodeConfig, Reporter
from popbench.node_factory import AnyNode, make_node
from popbench.wire.status import AnyStatus

StatusSink = Callable[[AnyStatus], None]


def run_node_forever(
    config: NodeConfig,
    report: Reporter | None = None,
    status_every_s: float | None = None,
    on_status: StatusSink | None = None,
) -> AnyStatus:
    """Serve until SIGINT or SIGTERM; returns the node's final status (its metrics summary).

    With ``POPBENCH_CPROFILE=DIR`` (and ``POPBENCH_CPROFILE_NODES``, comma-separated ids, default 0) the
    named nodes run under cProfile and write ``DIR/node-N.prof`` when they stop: where a round's CPU goes.
    With ``POPBENCH_TRACEMALLOC=DIR`` (``POPBENCH_TRACEMALLOC_NODES`` likewise) the named nodes trace their
    own allocations from the child's start and rewrite ``DIR/node-N.memory.txt`` every 5 s and at the
    stop: the Python heap by module and by line, and the process's private pages by mapping (where the
    USS goes; docs/memory.md).
    """
    memory_dir = _chosen("POPBENCH_TRACEMALLOC", config.node_id)
    if memory_dir:
        tracemalloc.start(8)
        on_status = _with_memory_dump(Path(memory_dir) / f"node-{config.node_id}.memory.txt", on_status)
        status_every_s = status_every_s or MEMORY_DUMP_EVERY_S
    profile_dir = _chosen("POPBENCH_CPROFILE", config.node_id)
    if profile_dir:
        profiler = cProfile.Profile(time.process_time)  # CPU, not wall: 100 nodes share 2 cores
        try:
            return profiler.runcall(uvloop.run, _serve(config, report, status_every_s, on_status))
        finally:
            profiler.dump_stats(os.path.join(profile_dir, f"node-{config.node_id}.prof"))
    try:
        return uvloop.run(_serve(config, report, status_every_s, on_status))
    finally:
        if memory_dir:
            _write_memory_profile(Path(memory_dir) / f"node-{config.node_id}.memory.txt")


MEMORY_DUMP_EVERY_S = 5.0


def _chosen(variable: str, node_id: int) -> str | None:
    """``$variable`` (a directory) when this node is among ``${variable}_NODES`` (comma-separated, default 0)."""
    directory = os.environ.get(variable)
    if directory and str(node_id) in os.environ.get(f"{variable}_NODES", "0").split(","):
        return directory
    return None


def _with_memory_dump(path: Path, on_status: StatusSink | None) -> StatusSink:
    def dump(status: AnyStatus) -> None:
        _write_memory_profile(path)
        if on_status is not None:
            on_status(status)

    return dump


def _write_memory_profile(path: Path) -> None:
    partial = path.with_suffix(".tmp")
    partial.write_text(memory_profile())
    partial.replace(path)


def private_kib() -> int:
    """This process's USS in KiB: Private_Clean + Private_Dirty of /proc/self/smaps_rollup."""
    total = 0
    with open("/proc/self/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total


def memory_profile(top: int = 25) -> str:
    """This process's traced Python heap by module and by line, then its private pages by mapping."""
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    by_file = snapshot.statistics("filename")
    current, peak = tracemalloc.get_traced_memory()
    lines = [
        f"USS {private_kib() / 1024:.2f} MiB; traced now {current / 2**20:.2f} MiB, peak {peak / 2**20:.2f} MiB; "
        f"tracemalloc's own {tracemalloc.get_tracemalloc_memory() / 2**20:.2f} MiB",
        f"python heap traced since start: {sum(s.size for s in by_file) / 2**20:.2f} MiB in {sum(s.count for s in by_file):,} blocks",
        "-- by module",
    ]
    lines += [f"{s.size / 1024:10.1f} KiB {s.count:8,} blocks  {s.traceback[0].filename}" for s in by_file[:top]]
    lines.append("-- by line")
    lines += [f"{s.size / 1024:10.1f} KiB {s.count:8,} blocks  {s.traceback[0].filename}:{s.traceback[0].lineno}"
              for s in snapshot.statistics("lineno")[:top]]  # fmt: skip
    lines.append("-- private pages by mapping (/proc/self/smaps: dirty, clean)")
    lines += [f"{dirty:10,} kB {clean:8,} kB  {name}" for name, dirty, clean in private_by_mapping()[:top]]
    return "\n".join(lines) + "\n"


def private_by_mapping() -> list[tuple[str, int, int]]:
    """``(mapping, Private_Dirty kB, Private_Clean kB)`` summed by name ([heap], [anon], a library), largest first."""
    totals: dict[str, list[int]] = {}
    name = "[anon]"
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            field, _, rest = line.partition(" ")
            if "-" in field and not field.endswith(":"):
                parts = rest.split()
                name = parts[4] if len(parts) > 4 else "[anon]"
                totals.setdefault(name, [0, 0])
            elif field == "Private_Dirty:":
                totals[name][0] += int(rest.split()[0])
            elif field == "Private_Clean:":
                totals[name][1] += int(rest.split()[0])
    return sorted(((n, d, c) for n, (d, c) in totals.items()), key=lambda row: -(row[1] + row[2]))


async def _serve(config: NodeConfig, report: Reporter | None, every_s: float | None, on_status: StatusSink | None) -> AnyStatus:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    install_exception_counter(loop)
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    node = make_node(config, report)
    loop.add_signal_handler(signal.SIGUSR1, node.reload_faults)  # the harness wrote this node's faults file
    ticker: asyncio.Task[None] | None = None
    trimmer = loop.create_task(_trim_heap_forever())
    try:
        await node.start()
        if every_s and on_status:
            ticker = loop.create_task(_tick(node, every_s, on_status))
        await stop.wait()
    finally:
        trimmer.cancel()
        if ticker is not None:
            ticker.cancel()
        final = node.status()
        await node.stop()
    return final


MALLOC_TRIM_EVERY_S = 2.0


async def _trim_heap_forever() -> None:
    """Give the C heap's free pages back to the kernel every 2 s (glibc's ``malloc_trim(0)``).

    A validator's load comes in bursts (a gossip batch, a block's votes from every peer, a backlog after a
    view change); what a burst allocated outside Python's small-object arenas stays resident after it is
    freed, and in a forked child every such page is private: at N = 100 this is a quarter of a node's USS
    (docs/memory.md). A trim of a node's heap takes well under a millisecond.
    """
    trim = _malloc_trim()
    if trim is None:
        return
    while True:
        await asyncio.sleep(MALLOC_TRIM_EVERY_S)  # a period, not a synchronisation
        trim(0)


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        function: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return function


async def _tick(node: AnyNode, every_s: float, on_status: StatusSink) -> None:
    while True:
        await asyncio.sleep(every_s)  # the status line's period, not a synchronisation
        on_status(node.status())
