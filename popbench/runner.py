"""Run one node process in the foreground: a fresh uvloop loop, signal handling, periodic status.

Used by ``popbench node`` and by the harness's node children (after fork, a child never reuses the
supervisor's loop: it builds its own here). The loop counts every exception that reaches it
(popbench.loop_exceptions); the count is in the node's STATUS.
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import signal
from collections.abc import Callable

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
    """
    profile_dir = os.environ.get("POPBENCH_CPROFILE")
    if profile_dir and str(config.node_id) in os.environ.get("POPBENCH_CPROFILE_NODES", "0").split(","):
        profiler = cProfile.Profile()
        try:
            return profiler.runcall(uvloop.run, _serve(config, report, status_every_s, on_status))
        finally:
            profiler.dump_stats(os.path.join(profile_dir, f"node-{config.node_id}.prof"))
    return uvloop.run(_serve(config, report, status_every_s, on_status))


async def _serve(config: NodeConfig, report: Reporter | None, every_s: float | None, on_status: StatusSink | None) -> AnyStatus:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    install_exception_counter(loop)
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    node = make_node(config, report)
    loop.add_signal_handler(signal.SIGUSR1, node.reload_faults)  # the harness wrote this node's faults file
    ticker: asyncio.Task[None] | None = None
    try:
        await node.start()
        if every_s and on_status:
            ticker = loop.create_task(_tick(node, every_s, on_status))
        await stop.wait()
    finally:
        if ticker is not None:
            ticker.cancel()
        final = node.status()
        await node.stop()
    return final


async def _tick(node: AnyNode, every_s: float, on_status: StatusSink) -> None:
    while True:
        await asyncio.sleep(every_s)  # the status line's period, not a synchronisation
        on_status(node.status())
