"""`popbench run`: the main job (being built under issue 4)."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    @group.command()
    def run() -> None:
        """Run a benchmark network and score it."""
        raise click.ClickException("`popbench run` is not built yet (issue 4)")
