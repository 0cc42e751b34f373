"""The ``popbench`` command: a click group; each command lives in the module that owns its job."""

from __future__ import annotations

import sys

import click

from harness.cli import commands as cli_commands
from popbench import __version__
from popbench.errors import PopbenchError


class PopbenchGroup(click.Group):
    """Loads each command's module when the command is used (harness/cli/commands.py), and turns any
    PopbenchError escaping a command into a one-line message and exit status 2."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return cli_commands.command_names()

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cli_commands.load_command(self, cmd_name)
        return super().get_command(ctx, cmd_name)

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
