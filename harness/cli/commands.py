"""Registers every command of the ``popbench`` group: one entry per module that owns commands.

Each listed module exposes ``register(group: click.Group) -> None``.
"""

from __future__ import annotations

import importlib

import click

COMMAND_MODULES: tuple[str, ...] = (
    "harness.cli.run",
    "harness.cli.node",
    "harness.cli.genesis",
    "harness.cli.sweep",
    "harness.cli.compare",
)


def register(group: click.Group) -> None:
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(group)
