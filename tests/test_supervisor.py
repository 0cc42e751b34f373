"""The supervisor on its own: readiness by message, dead versus slow children, crashes, no orphans."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil
import pytest

from harness.kinds import ChildId, ChildKind
from harness.procs.child import ChildContext
from harness.procs.supervisor import Supervisor
from popbench.errors import NodeStartError

TEST_TIMEOUT_S = 30.0


def run(coro_factory: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro_factory(), TEST_TIMEOUT_S))


async def wait_exited(supervisor: Supervisor, name: ChildId, timeout_s: float = 10.0) -> None:
    """Poll waitpid (through ``reap``) until the child has exited, with a deadline."""
    deadline = time.monotonic() + timeout_s
    while supervisor.children[name].alive and time.monotonic() < deadline:
        supervisor.reap()
        await asyncio.sleep(0.01)  # polling waitpid until the exit lands
    assert not supervisor.children[name].alive, f"{name} did not exit within {timeout_s} s"


def ready_then_wait(ctx: ChildContext) -> None:
    ctx.report("ready", pid=os.getpid())
    signal.pause()  # a child with nothing to do until the supervisor stops it


def die_at_once(ctx: ChildContext) -> None:
    raise RuntimeError("this child fails on purpose")


def never_ready(ctx: ChildContext) -> None:
    signal.pause()


def node(index: int) -> ChildId:
    return ChildId(ChildKind.NODE, index)


def other(index: int) -> ChildId:
    return ChildId(ChildKind.OTHER, index)


DEAD, SLOW = other(10), other(11)
VICTIM, CALM = node(10), node(11)


def test_wait_for_returns_each_childs_event(tmp_path: Path) -> None:
    async def body() -> None:
        async with Supervisor(tmp_path) as supervisor:
            for index in range(3):
                supervisor.spawn(other(index), ready_then_wait)
            events = await supervisor.wait_for("ready", [other(0), other(1), other(2)], 10.0)
            assert {name: e["pid"] for name, e in events.items()} == supervisor.pids()

    run(body)


def test_a_dead_child_is_told_apart_from_a_slow_one(tmp_path: Path) -> None:
    async def body() -> None:
        async with Supervisor(tmp_path) as supervisor:
            supervisor.spawn(DEAD, die_at_once)
            with pytest.raises(NodeStartError, match=r"died before reporting 'ready': exit code 70(.|\n)*on purpose"):
                await supervisor.wait_for("ready", [DEAD], 10.0)
            supervisor.spawn(SLOW, never_ready)
            with pytest.raises(NodeStartError, match="still alive but did not report 'ready'"):
                await supervisor.wait_for("ready", [SLOW], 0.5)

    run(body)


def test_a_killed_node_is_a_crash_and_a_stopped_one_is_not(tmp_path: Path) -> None:
    async def body() -> None:
        async with Supervisor(tmp_path) as supervisor:
            supervisor.spawn(VICTIM, ready_then_wait)
            supervisor.spawn(CALM, ready_then_wait)
            await supervisor.wait_for("ready", [VICTIM, CALM], 10.0)
            supervisor.kill(VICTIM)
            await supervisor.stop([CALM])
            await wait_exited(supervisor, VICTIM)
            assert [crash.name for crash in supervisor.crashes] == [str(VICTIM)]
            assert supervisor.crashes[0].exit == "killed by SIGKILL"

    run(body)


def test_no_child_outlives_the_supervisor_context(tmp_path: Path) -> None:
    pids: list[int] = []

    async def body() -> None:
        async with Supervisor(tmp_path) as supervisor:
            for index in range(4):
                supervisor.spawn(node(index), ready_then_wait)
            await supervisor.wait_for("ready", [node(i) for i in range(4)], 10.0)
            pids.extend(supervisor.pids().values())

    run(body)
    assert len(pids) == 4
    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


def test_restart_forks_the_same_child_again(tmp_path: Path) -> None:
    async def body() -> None:
        async with Supervisor(tmp_path) as supervisor:
            first = supervisor.spawn(node(0), ready_then_wait)
            await supervisor.wait_for("ready", [node(0)], 10.0)
            old_pid = first.pid
            with pytest.raises(NodeStartError, match="still running"):
                supervisor.restart(node(0))
            supervisor.kill(node(0))
            await wait_exited(supervisor, node(0))
            fresh = supervisor.restart(node(0))
            await supervisor.wait_for("ready", [node(0)], 10.0)
            assert fresh.pid != old_pid and fresh.alive

    run(body)
