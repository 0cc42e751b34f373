"""`popbench genesis`: the files it writes, its refusals, and a node that runs from what it wrote."""

from __future__ import annotations

import asyncio
import signal
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from popbench import crypto
from popbench.client import NodeClient
from popbench.errors import ConfigError
from popbench.genesis import genesis_from_dict, load_genesis, load_keys, make_genesis
from popbench.model.proof import Proof
from popbench.wire import TOPIC_COMMITS, Committed, ItemKind, RejectReason, SubmitResult
from tests.cluster import POPBENCH, _listening_socket

pytestmark = pytest.mark.timeout(180)
COMMAND_TIMEOUT_S = 60
COMMIT_TIMEOUT_S = 60.0
T = TypeVar("T")


def run_genesis(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([POPBENCH, "genesis", *args], cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)


@pytest.mark.parametrize("name", [7, None, ["x"], {"a": 1}, True])
def test_a_chain_name_that_is_not_a_string_is_refused(name: Any) -> None:
    data = make_genesis(2)[0].to_json_dict()
    data["chain_name"] = name
    with pytest.raises(ConfigError, match=r"bad\.json: chain_name: must be a string"):
        genesis_from_dict(data, "bad.json")


def test_genesis_writes_the_genesis_and_a_private_keys_file_and_prints_the_chain_id(tmp_path: Path) -> None:
    done = run_genesis("--validators", "4", "--output", "genesis.json", "--seed", "s1", "--stake", "2000",
                       "--balance", "5", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    genesis = load_genesis(tmp_path / "genesis.json")
    assert done.stdout.strip() == genesis.chain_id.hex()
    keys_path = tmp_path / "genesis.keys.json"
    assert stat.S_IMODE(keys_path.stat().st_mode) == 0o600
    keys = load_keys(keys_path)
    assert {i: k.public_key for i, k in keys.items()} == genesis.public_keys
    assert [v.stake for v in genesis.validators] == [2000] * 4 and set(genesis.balances.values()) == {5}
    assert genesis.chain_id == make_genesis(4, seed="s1", stake=2000, balance=5)[0].chain_id  # reproducible from the seed


def test_without_a_seed_two_networks_get_different_keys(tmp_path: Path) -> None:
    first = run_genesis("--validators", "1", "--output", "a.json", cwd=tmp_path)
    second = run_genesis("--validators", "1", "--output", "b.json", cwd=tmp_path)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert first.stdout != second.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--validators", "0", "--output", "g.json"], "--validators': must be in [1, 4294967296], got 0"),
        (["--validators", "2", "--output", "missing-dir/g.json"], "missing-dir does not exist"),
        (["--validators", "2", "--output", "existing.json"], "existing.json exists (give --force"),
        (["--validators", "2", "--output", "g.json", "--stake", "999"], "--stake: stake 999 is below the minimum stake 1000"),
    ],
)
def test_bad_input_is_refused_with_exit_2_and_writes_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "existing.json").write_text("keep me")
    done = run_genesis(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
    assert (tmp_path / "existing.json").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.json"]


def test_an_existing_keys_file_is_refused_too_but_force_overwrites_both(tmp_path: Path) -> None:
    (tmp_path / "g.keys.json").write_text("{}")
    refused = run_genesis("--validators", "1", "--output", "g.json", cwd=tmp_path)
    assert refused.returncode == 2 and "g.keys.json exists" in refused.stderr
    forced = run_genesis("--validators", "1", "--output", "g.json", "--seed", "x", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert list(load_keys(tmp_path / "g.keys.json")) == [0]


def test_a_node_started_from_the_written_files_serves_and_commits(tmp_path: Path) -> None:
    done = run_genesis("--validators", "1", "--output", "genesis.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    sock = _listening_socket()
    log_path = tmp_path / "node.log"
    with log_path.open("wb") as log:
        node = subprocess.Popen([POPBENCH, "node", "--genesis", "genesis.json", "--node-id", "0", "--data-dir", "data",
                                 "--listen-fd", str(sock.fileno())], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                pass_fds=(sock.fileno(),))  # fmt: skip
    try:
        chain_id = bytes.fromhex(done.stdout.strip())
        asyncio.run(_submit_and_see_committed(tmp_path / "genesis.json", chain_id, sock.getsockname()[1]))
    except BaseException:
        print(log_path.read_text(errors="replace")[-3000:])
        raise
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=30)
        sock.close()


async def _submit_and_see_committed(genesis_path: Path, chain_id: bytes, port: int) -> None:
    genesis = load_genesis(genesis_path)
    client = await _connect_with_deadline(port, chain_id, genesis.public_keys)
    try:
        status = await client.status()
        assert (status.node_id, status.role) == (0, "validator")
        committed: asyncio.Future[Committed] = asyncio.get_running_loop().create_future()
        result: asyncio.Future[SubmitResult] = asyncio.get_running_loop().create_future()
        client.on_committed = first_into(committed)
        client.on_result = first_into(result)
        client.subscribe(TOPIC_COMMITS)
        proof = Proof.create(
            crypto.derive_key("genesis-command-test", 0), chain_id, b"by hand", genesis.params.min_work_bits, 1, time.time_ns()
        )
        client.submit(1, ItemKind.PROOF, proof.encode())
        answer = await asyncio.wait_for(result, COMMIT_TIMEOUT_S)
        assert (answer.reason, answer.item_id) == (RejectReason.ACCEPTED, proof.id)
        note = await asyncio.wait_for(committed, COMMIT_TIMEOUT_S)
        assert note.proof_ids == [proof.id]
    finally:
        client.close()


def first_into(future: asyncio.Future[T]) -> Callable[[T], None]:
    """A callback that resolves ``future`` with the first value it is given and ignores the rest."""

    def resolve(value: T) -> None:
        if not future.done():
            future.set_result(value)

    return resolve


async def _connect_with_deadline(port: int, chain_id: bytes, validators: dict[int, bytes]) -> NodeClient:
    """The node's process needs a moment to import and open its database: retry until a deadline."""
    deadline = time.monotonic() + COMMIT_TIMEOUT_S
    while True:
        try:
            return await NodeClient.connect("127.0.0.1", port, chain_id=chain_id, validators=validators, timeout_s=5.0)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)  # retry period of a connection attempt with a deadline
