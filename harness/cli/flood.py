"""``popbench flood HOST:PORT``: a hostile client sending unique bad-signature proofs (harness/load/flood.py)."""

from __future__ import annotations

import click
import uvloop

from harness.cli.numeric import integer, positive
from harness.load.flood import flood


@click.command("flood")
@click.argument("address")
@click.option("--duration", "duration_s", type=positive(), default=30.0, show_default=True, help="Seconds to flood for.")
@click.option("--work-bits", type=integer(0, 64), default=8, show_default=True, help="Work each proof carries (the chain's minimum).")
def flood_command(address: str, duration_s: float, work_bits: int) -> None:
    """Flood the node at ADDRESS (host:port) with unique proofs whose signatures do not verify: each one
    passes every cheap check, so the node must verify it (docs/faults.md)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter("must be HOST:PORT", param_hint="ADDRESS")
    result = uvloop.run(flood(host, int(port), duration_s, work_bits))
    answers = ", ".join(f"{name} {count:,}" for name, count in sorted(result.answered.items())) or "none"
    click.echo(f"flood: {result.sent:,} proofs in {result.duration_s:.1f} s ({result.per_s:,.0f}/s); answers: {answers}")


def register(group: click.Group) -> None:
    group.add_command(flood_command)
