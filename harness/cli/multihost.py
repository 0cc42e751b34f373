"""`popbench host-supervisor` and `popbench coordinate`: one run of a profile over several hosts.

Each host runs ``popbench host-supervisor --ordinal i`` (validators [i*K, (i+1)*K), forked by popbench's
own supervisor); one ``popbench coordinate`` drives the load, samples every validator and writes the one
report, exactly as ``popbench run`` does on one host. On one machine the hosts are distinct loopback
addresses (docs/kubernetes.md, "On one machine"); in a cluster, a StatefulSet's pods (popbench deploy k8s).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import click
import uvloop

from harness.cli import numeric
from harness.cli.run import _exit_status, _finish, interrupts_stop
from harness.multihost.coordinator import CoordinatedRun, Fleet
from harness.multihost.deployment import load_network
from harness.multihost.host import HostSpec, run_host
from harness.multihost.plan import (
    DEFAULT_BASE_PORT,
    DEFAULT_CONTROL_PORT,
    LOOPBACK_PATTERN,
    HostPlan,
    expand_names,
    ordinal_from_hostname,
    resolved,
)
from harness.profile import Profile, load_profile
from harness.report import html, render
from harness.run.phases import RunData, new_run_id
from popbench import crypto


def register(group: click.Group) -> None:
    group.add_command(host_supervisor_command)
    group.add_command(coordinate_command)


def plan_options(command: Any) -> Any:
    """The options every process of a multi-host run must be given alike: they make the address plan."""
    for option in reversed([
        click.option("--profile", "profile_name", required=True, help="Profile name in profiles/ or a TOML path (the same on every host)."),
        click.option("--hosts", type=numeric.integer(1), required=True, help="H: how many hosts share the validators."),
        click.option("--addresses", default=LOOPBACK_PATTERN, show_default=True,
                     help="Host i's name or IPv4 address: a list a,b,c or a pattern with {i} (ordinal) or {n} (i + 1)."),
        click.option("--base-port", type=numeric.integer(1, 65535), default=DEFAULT_BASE_PORT, show_default=True,
                     help="Validator k of a host listens on base port + k."),
        click.option("--control-port", type=numeric.integer(1, 65535), default=DEFAULT_CONTROL_PORT, show_default=True,
                     help="Each host supervisor's control channel."),
        click.option("--genesis-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
                     help="genesis.json and genesis.keys.json to use (default: derived from the profile's seed, as every host derives them)."),
    ]):  # fmt: skip
        command = option(command)
    return command


def _plan(profile: Profile, hosts: int, addresses: str, base_port: int, control_port: int) -> HostPlan:
    named = HostPlan(profile.network.nodes, hosts, expand_names(addresses, hosts), base_port, control_port)
    return resolved(named, profile.run.ready_timeout_s)  # nodes dial numbers: names are resolved once, here


@click.command("host-supervisor")
@plan_options
@click.option(
    "--ordinal", type=numeric.integer(0), help="Which host this is (default: the -N suffix of the hostname, a StatefulSet pod's)."
)
@click.option("--bind", help="Address to listen on (default: this host's own entry in --addresses; in a pod, its IP).")
@click.option("--output", type=click.Path(path_type=Path), default=Path("host"), show_default=True,
              help="This host's directory: logs/ of its validators, and data/ (their databases) unless --data-dir.")  # fmt: skip
@click.option("--data-dir", type=click.Path(path_type=Path), help="Where the validators keep their databases and event logs.")
@click.option("--linger", is_flag=True, help="After the run, stay (idle) until SIGTERM: a pod that exits would be restarted.")
def host_supervisor_command(profile_name: str, hosts: int, addresses: str, base_port: int, control_port: int, genesis_dir: Path | None,
                            ordinal: int | None, bind: str | None, output: Path, data_dir: Path | None, linger: bool) -> None:  # fmt: skip
    """Run this host's share of a multi-host run's validators, until the coordinator says the run is over."""
    profile = load_profile(profile_name)
    crypto.set_backend(profile.consensus.crypto)
    index = ordinal if ordinal is not None else ordinal_from_hostname(socket.gethostname())
    plan = _plan(profile, hosts, addresses, base_port, control_port)
    ids = plan.ids(index)
    spec = HostSpec(profile=profile, plan=plan, ordinal=index, network=load_network(profile, genesis_dir), run_dir=output,
                    data_dir=data_dir or output / "data", bind=bind or plan.names[index])  # fmt: skip
    click.echo(
        f"popbench host-supervisor {index} of {hosts}: validators {ids.start}-{ids.stop - 1} of {plan.nodes}, profile {profile.name}"
    )
    uvloop.run(run_host(spec, click.echo))
    if linger:
        click.echo("the run is over: idle until SIGTERM")
        _wait_for_signal(None)


@click.command("coordinate")
@plan_options
@click.option("--output", type=click.Path(path_type=Path), help="Run directory (default: reports/<run-id>).")
@click.option("--hold-after-s", type=numeric.number(0.0), default=0.0, show_default=True,
              help="After writing the report, wait this long before exiting (a Job's pod, so the report can be copied out).")  # fmt: skip
def coordinate_command(profile_name: str, hosts: int, addresses: str, base_port: int, control_port: int, genesis_dir: Path | None,
                       output: Path | None, hold_after_s: float) -> None:  # fmt: skip
    """Drive the load on a multi-host run's validators, sample them all, and write its one report."""
    profile = load_profile(profile_name)
    crypto.set_backend(profile.consensus.crypto)
    plan = _plan(profile, hosts, addresses, base_port, control_port)
    run_id = new_run_id(profile)
    run_dir = output or Path("reports") / run_id
    click.echo(f"popbench coordinate {run_id}: {plan.describe()}, profile {profile.name}")
    data = uvloop.run(_execute(profile, run_dir, run_id, Fleet.of(plan), genesis_dir))
    report = _finish(data)
    click.echo(render.console(report))
    click.echo(f"\nreport: {run_dir / 'report.json'}  summary: {run_dir / 'summary.md'}  page: {run_dir / html.HTML_NAME}")
    status = _exit_status(report, data, profile, None)
    if hold_after_s:
        click.echo(
            f"holding {hold_after_s:g} s so the run directory can be copied (kubectl cp {os.uname().nodename}:{run_dir.resolve()} .)"
        )
        _wait_for_signal(hold_after_s)
    sys.exit(status)


def _wait_for_signal(timeout_s: float | None) -> None:
    """Idle until SIGTERM or SIGINT (or ``timeout_s``): blocked first, so either ends the wait, not the process."""
    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    if timeout_s is None:
        signal.sigwait(stop)
    else:
        signal.sigtimedwait(stop, timeout_s)


async def _execute(profile: Profile, run_dir: Path, run_id: str, fleet: Fleet, genesis_dir: Path | None) -> RunData:
    run = CoordinatedRun(profile, run_dir, run_id, lambda line: click.echo(line), fleet, genesis_dir)
    with interrupts_stop(run):
        return await run.execute()
