"""Registers every command of the ``popbench`` group. One line per module that owns commands."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    @group.command()
    def run() -> None:
        """Run a benchmark network (not built yet)."""
        raise click.ClickException("`popbench run` is not built yet: see issue 4")
