"""What each forked child of a run executes (built in the supervisor, run in the child after fork)."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import uvloop

from harness.child import ChildContext
from harness.load import DriverSpec, drive
from popbench.node import NodeConfig
from popbench.runner import run_node_forever

PROGRESS_EVERY_S = 1.0


def node_target(config: NodeConfig) -> Any:
    """A node child: serve until SIGTERM, then report the final status (counters survive the node)."""

    def main(ctx: ChildContext) -> None:
        final = run_node_forever(config, report=lambda event, fields: ctx.report(event, **fields))
        ctx.report("final", status=final)

    return main


def driver_target(spec: DriverSpec) -> Any:
    """A load driver child: prepare, send on schedule, drain, write records, report a summary."""

    def main(ctx: ChildContext) -> None:
        summary = uvloop.run(_drive(spec, ctx))
        ctx.report("done", **summary)

    return main


async def _drive(spec: DriverSpec, ctx: ChildContext) -> dict[str, Any]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return await drive(spec, lambda event, fields: ctx.report(event, at_ns=time.time_ns(), **fields), stop)
