"""`popbench genesis`: write a network's genesis file and its keys file, print the chain id.

The founding step of a network started by hand (README, "A network by hand"): validator i's key is
``derive_key(seed, i)``, as in every benchmark network (docs/genesis.md, "Keys file").
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import click

from harness.cli.node import default_keys_path
from harness.cli.numeric import integer
from popbench import crypto
from popbench.errors import ConfigError
from popbench.genesis import MAX_AMOUNT, MAX_NODE_ID, ChainParams, Genesis, make_genesis, write_genesis, write_keys

DEFAULT_STAKE = 10_000
DEFAULT_BALANCE = 1_000_000


def register(group: click.Group) -> None:
    group.add_command(genesis_command)


@click.command("genesis")
@click.option("--validators", "count", type=integer(1, MAX_NODE_ID + 1), required=True, help="Number of validators (node ids 0..N-1).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Genesis file to write; the keys go beside it (genesis.json -> genesis.keys.json).")  # fmt: skip
@click.option("--seed", default=None, help="Derive the keys from this seed (reproducible); default: a random seed.")
@click.option("--stake", type=integer(0, MAX_AMOUNT), default=DEFAULT_STAKE, show_default=True, help="Stake of every validator.")
@click.option(
    "--balance",
    type=integer(0, MAX_AMOUNT),
    default=DEFAULT_BALANCE,
    show_default=True,
    help="Opening balance of every validator.",
)
@click.option("--force", is_flag=True, help="Overwrite existing genesis and keys files.")
def genesis_command(count: int, output: Path, seed: str | None, stake: int, balance: int, force: bool) -> None:
    """Write a genesis for N validators and its keys file (mode 0600); print the chain id."""
    keys_path = default_keys_path(output)
    refuse_unwritable(output, keys_path, force)
    genesis, keys = build_genesis(count, seed, stake, balance)
    try:
        write_genesis(genesis, output)
        write_keys(keys, keys_path)
    except OSError as err:
        raise ConfigError(f"cannot write: {err}", key="--output") from err
    click.echo(f"wrote {output} ({count} validators) and {keys_path} (mode 0600)", err=True)
    click.echo(genesis.chain_id.hex())


def refuse_unwritable(output: Path, keys_path: Path, force: bool) -> None:
    """Refuse before writing anything, so a refused command leaves no half-written pair behind."""
    for path in (output, keys_path):
        if path.exists() and not force:
            raise ConfigError(f"{path} exists (give --force to overwrite it)", key="--output")
    directory = output.parent
    if not directory.is_dir():
        raise ConfigError(f"directory {directory} does not exist", key="--output")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"directory {directory} is not writable", key="--output")


def build_genesis(count: int, seed: str | None, stake: int, balance: int) -> tuple[Genesis, list[crypto.SigningKey]]:
    minimum = ChainParams().min_stake
    if stake < minimum:
        raise ConfigError(f"stake {stake} is below the minimum stake {minimum}", key="--stake")
    return make_genesis(count, seed=seed if seed is not None else secrets.token_hex(32), stake=stake, balance=balance)
