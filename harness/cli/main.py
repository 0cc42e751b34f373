"""The ``popbench`` command: a click group; each command lives in the module that owns its job."""

from __future__ import annotations

import sys

import click

from popbench import __version__
from popbench.errors import PopbenchError


class PopbenchGroup(click.Group):
    """Turns any PopbenchError escaping a command into a one-line message and exit status 2."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except PopbenchError as err:
            click.echo(f"popbench: error: {err}", err=True)
            sys.exit(2)


@click.group(cls=PopbenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="popbench")
def main() -> None:
    """popbench: benchmark real Proof-of-Proof (PBFT) and proof-of-work networks on one host."""


def _register_commands() -> None:
    # Each module adds its own commands; importing here keeps start-up of `--help` cheap and in one place.
    from harness.cli import commands as cli_commands

    cli_commands.register(main)


_register_commands()
