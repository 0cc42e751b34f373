"""Which module owns each command of the ``popbench`` group, loaded when the command is used.

Each listed module exposes ``register(group: click.Group) -> None``. Loading on demand keeps what a
command does not need out of its process: ``popbench run`` forks its nodes from a supervisor that has not
imported matplotlib, numpy or scipy (the sweep's and the regression check's libraries), so the nodes do
not carry them, and ``--help`` starts fast.
"""

from __future__ import annotations

import importlib

import click

COMMAND_MODULES: dict[str, str] = {
    "run": "harness.cli.run",
    "profiles": "harness.cli.run",
    "report": "harness.cli.run",
    "node": "harness.cli.node",
    "status": "harness.cli.node",
    "join": "harness.cli.node",
    "genesis": "harness.cli.genesis",
    "sweep": "harness.cli.sweep",
    "compare": "harness.cli.compare",
    "baseline": "harness.cli.compare",
    "monitor": "harness.cli.monitor",
    "host-supervisor": "harness.cli.multihost",
    "coordinate": "harness.cli.multihost",
    "deploy": "harness.cli.deploy",
    "flood": "harness.cli.flood",
}


def command_names() -> list[str]:
    return sorted(COMMAND_MODULES)


def load_command(group: click.Group, name: str) -> None:
    """Register the commands of the module that owns ``name`` (once), if any does."""
    module_name = COMMAND_MODULES.get(name)
    if module_name is not None and name not in group.commands:
        importlib.import_module(module_name).register(group)


def register(group: click.Group) -> None:
    """Register every command now (tests and tools that walk the whole group)."""
    for name in command_names():
        load_command(group, name)
