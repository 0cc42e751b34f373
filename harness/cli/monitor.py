"""`popbench monitor`: watch a running network live, a run by its directory or nodes by their addresses."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import click
import uvloop

from harness.cli import numeric
from harness.cli.node import parse_address
from harness.monitor.app import MonitorApp
from harness.monitor.targets import Target, from_addresses, from_run_dir
from popbench.errors import ConfigError
from popbench.genesis import load_genesis

DEFAULT_INTERVAL_S = 1.0
WAIT_FOR_RUN_S = 60.0  # a run directory named before the run has deployed: wait this long for nodes.json
WAIT_POLL_S = 0.5


def register(group: click.Group) -> None:
    group.add_command(monitor_command)


@click.command("monitor")
@click.argument("targets", nargs=-1, required=True)
@click.option("--interval", "interval_s", type=numeric.number(0.1, 3600.0), help="Seconds between refreshes  [default: the run's, or 1]")
@click.option("--genesis", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Genesis of nodes given by address (f, and the leaderboard's rewards).")  # fmt: skip
def monitor_command(targets: tuple[str, ...], interval_s: float | None, genesis: Path | None) -> None:
    """Watch a running network: TARGETS is a run directory, or HOST:PORT of one or more nodes (the rest
    are found through their PEERS). q or Ctrl-C quits."""
    target = resolve(targets, genesis)
    app = MonitorApp(target, interval_s or target.interval_s or DEFAULT_INTERVAL_S)
    with contextlib.suppress(KeyboardInterrupt):  # a SIGINT from outside the terminal: Textual has restored the screen
        app.run()


def resolve(targets: tuple[str, ...], genesis: Path | None) -> Target:
    first = Path(targets[0])
    if len(targets) == 1 and first.is_dir():
        return _wait_for_run(first)
    addresses = [parse_address(text, "TARGETS") for text in targets]
    return uvloop.run(from_addresses(addresses, load_genesis(genesis) if genesis else None))


def _wait_for_run(run_dir: Path) -> Target:
    """A run writes nodes.json once its sockets are bound (a few seconds after it starts: calibration)."""
    deadline = time.monotonic() + WAIT_FOR_RUN_S
    while True:
        try:
            return from_run_dir(run_dir)
        except ConfigError:
            if time.monotonic() > deadline:
                raise
            time.sleep(WAIT_POLL_S)  # polling a file another process writes, with a deadline
