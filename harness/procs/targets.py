"""What each forked child of a run executes (built in the supervisor, run in the child after fork)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import uvloop

from harness.host.pinning import set_own_niceness
from harness.load.drivers import DriverSpec, drive
from harness.load.miners import MinerSpec, run_miner
from harness.procs.child import ChildContext
from popbench.loop_exceptions import install_exception_counter, unexpected_exceptions
from popbench.node_config import NodeConfig
from popbench.runner import run_node_forever

GO_SIGNAL = signal.SIGUSR1


def node_target(config: NodeConfig, nice: int | None = None) -> Any:
    """A node child: serve until SIGTERM, then report the final status (counters survive the node).
    ``nice``: the niceness it takes as it starts (harness/host/pinning.py; None: the harness's); a restart
    runs the same target, so it takes the same."""

    def main(ctx: ChildContext) -> None:
        if nice is not None:
            set_own_niceness(nice)
        final = run_node_forever(config, report=lambda event, fields: ctx.report(event, **fields))
        ctx.report("final", status=final)

    return main


def driver_target(spec: DriverSpec) -> Any:
    """A load driver child: prepare, send on schedule, drain, write records, report a summary."""

    def main(ctx: ChildContext) -> None:
        summary = uvloop.run(_drive(spec, ctx))
        times = os.times()
        ctx.report(
            "done", cpu_s=times.user + times.system, unexpected_exceptions=unexpected_exceptions(), **summary
        )  # the generator's own cost

    return main


async def _drive(spec: DriverSpec, ctx: ChildContext) -> dict[str, Any]:
    stop, go = _stop_and_go(spec.go_path)
    return await drive(spec, lambda event, fields: ctx.report(event, at_ns=time.time_ns(), **fields), stop, go)


def miner_target(spec: MinerSpec, go_path: Path) -> Any:
    """A PoP miner child: wait for the go, grind and submit proofs until SIGTERM, report a summary."""

    def main(ctx: ChildContext) -> None:
        summary = uvloop.run(_mine(spec, go_path, ctx))
        ctx.report("done", unexpected_exceptions=unexpected_exceptions(), **summary)

    return main


async def _mine(spec: MinerSpec, go_path: Path, ctx: ChildContext) -> dict[str, Any]:
    stop, go = _stop_and_go(go_path)
    ctx.report("ready")
    return await run_miner(spec, lambda event, fields: ctx.report(event, **fields), stop, go)


def _stop_and_go(go_path: Path) -> tuple[asyncio.Event, asyncio.Future[int]]:
    """SIGINT/SIGTERM set ``stop``; the go signal resolves ``go`` with the window's start time.

    Called first thing on a driver's or miner's loop, so it also installs the loop exception counter there.
    """
    loop = asyncio.get_running_loop()
    install_exception_counter(loop)
    stop = asyncio.Event()
    go: asyncio.Future[int] = loop.create_future()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(GO_SIGNAL, _read_go, go_path, go)
    return stop, go


def _read_go(go_path: Path, go: asyncio.Future[int]) -> None:
    """The supervisor wrote the window's start time, then signalled: the go is a message, not a guess."""
    if not go.done():
        go.set_result(int(go_path.read_text()))


def send_go(go_path: Path, start_ns: int) -> None:
    """Supervisor side: publish the start time atomically; the caller then signals the drivers."""
    partial = go_path.with_suffix(".tmp")
    partial.write_text(str(start_ns))
    partial.replace(go_path)
