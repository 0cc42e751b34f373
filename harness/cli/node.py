"""`popbench node`, `popbench status` and `popbench join`: one node, by hand."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import click
import msgspec
import orjson
import uvloop

from harness.cli.numeric import integer
from harness.observe.prometheus import NodeMetricsServer
from popbench import crypto
from popbench.client import NodeClient
from popbench.errors import ConfigError
from popbench.genesis import MAX_AMOUNT, MAX_NODE_ID, load_genesis, load_keys
from popbench.kinds import ByzantineBehaviour, ConsensusKind, values
from popbench.model.block import certificate_voters
from popbench.node_config import NodeConfig
from popbench.pop.sync import join
from popbench.runner import run_node_forever
from popbench.wire import Role
from popbench.wire.status import AnyStatus, PowStatus, status_to_json_object

STATUS_EVERY_S = 1.0
NODE_ID = integer(0, MAX_NODE_ID)  # a node id travels as a u32


def parse_address(text: str, option: str = "address") -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{text!r} is not HOST:PORT", key=option)
    return host or "127.0.0.1", int(port)


def default_keys_path(genesis_path: Path) -> Path:
    return genesis_path.with_name(genesis_path.name.removesuffix(".json") + ".keys.json")


def node_key(genesis_path: Path, keys_path: Path | None, node_id: int) -> crypto.SigningKey:
    keys = load_keys(keys_path or default_keys_path(genesis_path))
    if node_id not in keys:
        raise ConfigError(f"no key for node {node_id} in the keys file", key="--keys")
    return keys[node_id]


def config_from_options(options: dict[str, Any]) -> NodeConfig:
    genesis_path = Path(options["genesis"])
    genesis = load_genesis(genesis_path)
    node_id = _node_id(options["node_id"])
    role = Role[str(options.get("role", "validator")).upper()]
    if options.get("key_hex"):
        key = crypto.SigningKey.from_secret(bytes.fromhex(options["key_hex"]))
    else:
        key = node_key(genesis_path, Path(options["keys"]) if options.get("keys") else None, node_id)
    peers = [parse_address(p, "--peer") for p in options.get("peers", [])]
    listen_fd = options.get("listen_fd")
    return NodeConfig(
        node_id=node_id, genesis=genesis, key=key, data_dir=Path(options["data_dir"]),
        listen=parse_address(options.get("listen") or "127.0.0.1:0", "--listen"),
        listen_socket=socket.socket(fileno=int(listen_fd)) if listen_fd is not None else None,
        dial=[(None, address) for address in peers], discover=True, role=role,
        byzantine=options.get("byzantine"), consensus=_consensus(options.get("consensus")),
        mine=_flag(options.get("mine"), "mine", default=True),
    )  # fmt: skip


def _node_id(value: Any) -> int:
    """The node id of a --config file, held to the bounds of the --node-id flag (a file skips click)."""
    problem = (
        NODE_ID.bound.problem(value) if isinstance(value, int) and not isinstance(value, bool) else f"must be an integer, got {value!r}"
    )
    if problem:
        raise ConfigError(problem, key="node_id")
    return int(value)


def _consensus(value: Any) -> ConsensusKind:
    chosen = ConsensusKind.PBFT.value if value is None else str(value)
    if chosen not in values(ConsensusKind):
        raise ConfigError(f"{chosen!r} is not one of {', '.join(values(ConsensusKind))}", key="consensus")
    return ConsensusKind(chosen)


def _flag(value: Any, key: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(f"must be true or false, got {value!r}", key=key)
    return value


def status_line(status: AnyStatus, previous: AnyStatus | None) -> str:
    if isinstance(status, PowStatus):
        return pow_status_line(status)
    committed = status.counters.proofs_committed
    rate = 0.0
    if previous is not None:
        elapsed = status.uptime_s - previous.uptime_s
        rate = (committed - previous.counters.proofs_committed) / elapsed if elapsed > 0 else 0.0
    return (f"node {status.node_id} height {status.height} view {status.view} "
            f"peers {status.peers} mempool {status.mempool} committed {rate:,.0f} proofs/s")  # fmt: skip


def pow_status_line(status: PowStatus) -> str:
    pow_ = status.pow
    return (f"node {status.node_id} pow height {pow_.height} tip {pow_.tip_hash[:12]} bits {pow_.work_bits} "
            f"mined {pow_.blocks_mined} {pow_.hash_rate / 1e6:.2f} MH/s stale {pow_.stale_blocks} "
            f"reorgs {pow_.reorgs} peers {status.peers} mempool {status.mempool}")  # fmt: skip


def register(group: click.Group) -> None:
    group.add_command(node_command)
    group.add_command(status_command)
    group.add_command(join_command)


@click.command("node")
@click.option("--genesis", type=click.Path(exists=True, dir_okay=False), help="Genesis file (its hash is the chain id).")
@click.option("--node-id", type=NODE_ID, help="This validator's id in the genesis.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where the node's SQLite database lives.")
@click.option("--listen", default=None, help="HOST:PORT to listen on  [default: 127.0.0.1:0, or the --config value]")
@click.option("--listen-fd", type=integer(0), help="Serve on this inherited, already listening socket (overrides --listen).")
@click.option("--peer", "peers", multiple=True, help="HOST:PORT of a peer to dial (repeatable).")
@click.option("--keys", type=click.Path(exists=True, dir_okay=False), help="Keys file (default: beside the genesis).")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), help="JSON file with the same options.")
@click.option(
    "--byzantine",
    type=click.Choice(values(ByzantineBehaviour)),
    help="Fault to inject (docs/profiles.md: leader, voter and collector faults).",
)
@click.option("--consensus", type=click.Choice(values(ConsensusKind)), help="pbft (PoP validator, default) or pow (Antimony).")
@click.option("--mine/--no-mine", default=None, help="PoW only: mine blocks (default: on).")
@click.option("--metrics-port", type=integer(0, 65535), help="Serve /metrics (Prometheus text format) on 127.0.0.1:PORT.")
def node_command(config_file: str | None, metrics_port: int | None, **options: Any) -> None:
    """Run one validator in the foreground, with a status line every second."""
    if config_file:
        options = {**_load_config(Path(config_file)), **{k: v for k, v in options.items() if v not in (None, ())}}
    for required in ("genesis", "node_id", "data_dir"):
        if options.get(required) is None:
            raise click.UsageError(f"--{required.replace('_', '-')} is required (or give --config)")
    config = config_from_options(options)
    previous: list[AnyStatus] = []
    metrics = NodeMetricsServer(metrics_port, STATUS_EVERY_S) if metrics_port is not None else None  # binds now: a port in use fails here
    if metrics is not None:
        click.echo(f"metrics: http://127.0.0.1:{metrics.port}/metrics")

    def print_status(status: AnyStatus) -> None:
        click.echo(status_line(status, previous[-1] if previous else None))
        previous[:] = [status]
        if metrics is not None:
            metrics.on_status(status)

    final = run_node_forever(config, None, STATUS_EVERY_S, print_status)
    summary = {"height": final.height, "view": final.view, "peers": final.peers, "unexpected_exceptions": final.unexpected_exceptions}
    click.echo(json.dumps({"final": summary, "counters": msgspec.to_builtins(final.counters)}, indent=2))


def _load_config(path: Path) -> dict[str, Any]:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as err:
        raise ConfigError(f"cannot read node config: {err}", source=str(path)) from err
    if not isinstance(data, dict):
        raise ConfigError("a node config must be a JSON object", source=str(path))
    return data


@click.command("status")
@click.argument("address")
@click.option("--json", "as_json", is_flag=True, help="Print the raw status object.")
def status_command(address: str, as_json: bool) -> None:
    """Ask the node at ADDRESS (HOST:PORT) for its status."""
    host, port = parse_address(address)
    status = uvloop.run(_fetch_status(host, port))
    if as_json:
        click.echo(json.dumps(status_to_json_object(status), indent=2, sort_keys=True))
        return
    for key, value in _summary_rows(status) + list(msgspec.structs.asdict(status.counters).items()):
        click.echo(f"{key:>23}: {value}")


def _summary_rows(status: AnyStatus) -> list[tuple[str, object]]:
    return [("consensus", "pow" if isinstance(status, PowStatus) else "pbft"), ("node_id", status.node_id),
            ("role", status.role), ("height", status.height), ("head_hash", status.head_hash), ("view", status.view),
            ("leader", status.leader), ("peers", status.peers), ("mempool", status.mempool),
            ("crypto_backend", status.crypto_backend), ("unexpected_exceptions", status.unexpected_exceptions)]  # fmt: skip


async def _fetch_status(host: str, port: int) -> AnyStatus:
    client = await NodeClient.connect(host, port)
    try:
        return await client.status()
    finally:
        client.close()


@click.command("join")
@click.option("--node-id", type=NODE_ID, required=True, help="Id for the joining node (not a genesis validator id).")
@click.option("--stake", type=integer(0, MAX_AMOUNT), required=True, help="Stake it brings; refused below the network's minimum.")
@click.option("--bootstrap", required=True, help="HOST:PORT of a running node.")
@click.option("--genesis", type=click.Path(exists=True, dir_okay=False), required=True, help="The network's genesis file.")
@click.option("--data-dir", type=click.Path(file_okay=False), default="data/joined", show_default=True)
@click.option("--listen", default="127.0.0.1:0", show_default=True)
@click.option("--seed", default=None, help="Derive the node key from this seed (default: a fresh random key).")
@click.option("--save-config", type=click.Path(dir_okay=False), help="Write a config for `popbench node --config`.")
@click.option("--start", is_flag=True, help="Keep running as a follower after the sync.")
def join_command(node_id: int, stake: int, bootstrap: str, genesis: str, data_dir: str, listen: str,
                 seed: str | None, save_config: str | None, start: bool) -> None:  # fmt: skip
    """Join a running network: check the stake, sync a verified snapshot, then follow the chain."""
    chain = load_genesis(Path(genesis))
    key = crypto.derive_key(seed, node_id) if seed else crypto.SigningKey.generate()
    snapshot, peers = uvloop.run(join(chain, key, node_id, stake, parse_address(bootstrap, "--bootstrap"), Path(data_dir)))
    if snapshot.record is None:
        click.echo(f"synced the opening state at height 0 (state root {snapshot.state.root().hex()[:16]}…: the network has "
                   f"committed nothing yet, checked against the genesis); {len(peers)} peers known")  # fmt: skip
    else:
        click.echo(f"synced snapshot at height {snapshot.height} (state root {snapshot.record.block.state_root.hex()[:16]}…, "
                   f"certificate of {len(certificate_voters(snapshot.record.certificate, chain))} validators); {len(peers)} peers known")  # fmt: skip
    options = {"genesis": genesis, "node_id": node_id, "data_dir": data_dir, "listen": listen, "role": "follower",
               "key_hex": key.secret.hex(), "peers": [f"{h}:{p}" for h, p in peers.values()]}  # fmt: skip
    if save_config:
        path = Path(save_config)
        path.write_bytes(orjson.dumps(options, option=orjson.OPT_INDENT_2))
        os.chmod(path, 0o600)  # it holds the node's private key
        click.echo(f"config written to {save_config}")
    if start:
        config = config_from_options(options)
        run_node_forever(config, None, STATUS_EVERY_S, lambda s: click.echo(status_line(s, None)))
