"""A client written from docs/protocol.md alone, against real `popbench node` processes.

The client uses `struct`, `hashlib`, asyncio streams and `popbench.crypto` (secp256k1 signatures) only:
no popbench.wire, popbench.client or popbench.model. If it can handshake, submit a proof, see it
committed and re-derive the block hash, items root, commit certificate and state root, the spec is
enough to write a client. It also speaks as a validator (its key from docs/genesis.md's seed rule) to
see how a node resolves two links. The spec's test vectors are recomputed here too, and must appear in
the spec. Where the docs define something no message shows directly (the leader schedule for unequal
stakes, the opening state, a BOND's effect), the docs' rule is computed here with the standard library
and compared with popbench's own code (popbench.genesis, popbench.pop.ledger, which the comparison alone
imports) or with what a node serves.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import random
import signal
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from popbench import crypto
from popbench.genesis import Genesis, genesis_from_dict
from popbench.mempool import PoolItem
from popbench.model.transfer import Transfer, TransferKind
from popbench.pop.ledger import Ledger
from popbench.store import Store
from popbench.wire import ItemKind
from tests.cluster import POPBENCH, _listening_socket

pytestmark = pytest.mark.timeout(300)
SPEC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
VALIDATORS = 4
ANSWER_TIMEOUT_S = 60.0
COMMIT_TIMEOUT_S = 120.0

# -- the spec, section by section -------------------------------------------------------------------
FRAME_HEADER = struct.Struct(">IB")  # 2. body length, type
HELLO_HEAD = struct.Struct(">H32sIB33s32sH")  # 4. HELLO, then listen_host text
(HELLO, HELLO_ACK, PING, PONG, DISCONNECT, SUBMIT, SUBMIT_RESULT, SUBSCRIBE, COMMITTED) = (1, 2, 3, 4, 5, 10, 11, 12, 13)
(BLOCK_REQUEST, BLOCK_RESPONSE, SNAPSHOT_REQUEST, SNAPSHOT_CHUNK, STATUS_REQUEST, STATUS) = (30, 31, 32, 33, 34, 35)
PEERS_REQUEST, PEERS, DUPLICATE_PEER = 36, 37, 6
PEER_ENTRY = struct.Struct(">IB4sH")  # 4. PEERS entry
SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
ROLE_VALIDATOR, ROLE_CLIENT, KIND_PROOF, TOPIC_COMMITS = 0, 2, 0, 1
ACCEPTED, REPLAY, MALFORMED, WRONG_CHAIN = 0, 3, 5, 3
PROOF_HEAD = struct.Struct(">32s33sBIQH")  # 7. proof head
TRANSFER_BODY = struct.Struct(">32s33s20sQQQB")  # 7. transfer body
BLOCK_HEADER = struct.Struct(">QQ32sIQ32s32s")  # 8. block header
ACCOUNT = struct.Struct(">20sQQQQ")  # 9. account record


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def merkle_root(leaves: list[bytes]) -> bytes:
    if not leaves:
        return sha256(b"")
    level = [sha256(b"\x00" + leaf) for leaf in leaves]
    while len(level) > 1:
        paired = [sha256(b"\x01" + level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)]
        level = paired + ([level[-1]] if len(level) % 2 else [])
    return level[0]


def state_root(records: bytes) -> bytes:
    return merkle_root([records[i : i + ACCOUNT.size] for i in range(0, len(records), ACCOUNT.size)])


def opening_records(genesis: dict[str, Any]) -> bytes:
    """docs/genesis.md, "Rewards and the opening state": one record per address in `balances` or among the
    validators (one for an address in both), sorted by address: the snapshot at height 0."""
    balances = {bytes.fromhex(address): amount for address, amount in genesis.get("balances", {}).items()}
    stakes = {sha256(bytes.fromhex(v["public_key"]))[:20]: v["stake"] for v in genesis["validators"]}
    return b"".join(ACCOUNT.pack(address, balances.get(address, 0), stakes.get(address, 0), 0, 0)
                    for address in sorted({*balances, *stakes}))  # fmt: skip


def ack_message(chain_id: bytes, nonce: bytes, signer_pubkey: bytes) -> bytes:
    return b"popbench/hello/v1" + chain_id + nonce + signer_pubkey


def commit_vote_message(chain_id: bytes, view: int, height: int, block_hash: bytes) -> bytes:
    return b"popbench/vote/v1/commit/" + chain_id + struct.pack(">QQ", view, height) + block_hash


def make_proof(key: crypto.SigningKey, chain_id: bytes, payload: bytes, work_bits: int, nonce: int | None = None) -> tuple[bytes, bytes]:
    """(encoded proof, proof id); grinds the nonce unless one is given."""
    prefix = PROOF_HEAD.pack(chain_id, key.public_key, work_bits, 1, 2, len(payload)) + payload
    if nonce is None:
        nonce = next(n for n in range(1 << 32) if int.from_bytes(sha256(prefix + n.to_bytes(8, "big")), "big") >> (256 - work_bits) == 0)
    signing = b"popbench/proof/v1" + prefix + nonce.to_bytes(8, "big")
    return prefix + nonce.to_bytes(8, "big") + key.sign(signing), sha256(signing)


def proof_id_of(encoded: bytes) -> bytes:
    """Section 7: sha256 of the domain string followed by the encoding without its 64-byte signature."""
    return sha256(b"popbench/proof/v1" + encoded[:-64])


LATER_PARAMS = {"leader_reputation": 1, "votes": 0, "collectors": 2, "collector_timeout_ms": 1000}  # docs/genesis.md, `params`


def chain_id_of(genesis_file: Path) -> bytes:
    """docs/genesis.md: sha256 of the canonical JSON (the file `popbench genesis` writes has every default);
    a parameter added after the format was published counts only when it is not at its default."""
    data = json.loads(genesis_file.read_text())
    data["params"] = {key: value for key, value in data["params"].items() if LATER_PARAMS.get(key, object()) != value}
    return sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode())


class Body:
    """Reads a message body front to back, per section 3."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, size: int) -> bytes:
        assert self.pos + size <= len(self.data), f"body too short: need {self.pos + size}, have {len(self.data)}"
        chunk, self.pos = self.data[self.pos : self.pos + size], self.pos + size
        return chunk

    def unpack(self, layout: struct.Struct) -> tuple[Any, ...]:
        return layout.unpack(self.take(layout.size))

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def blob(self) -> bytes:
        return self.take(self.u32())

    def blobs(self) -> list[bytes]:
        return [self.blob() for _ in range(self.u32())]

    def hashes(self) -> list[bytes]:
        return [self.take(32) for _ in range(self.u32())]

    def finish(self) -> None:
        assert self.pos == len(self.data), f"{len(self.data) - self.pos} trailing bytes"


# -- a client connection ----------------------------------------------------------------------------
class SpecClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.key = crypto.SigningKey.generate()
        self.commits: list[tuple[int, bytes, list[bytes]]] = []  # (height, block hash, proof ids) pushed so far

    async def send(self, message_type: int, body: bytes) -> None:
        self.writer.write(FRAME_HEADER.pack(len(body), message_type) + body)
        await self.writer.drain()

    async def read(self) -> tuple[int, bytes]:
        length, message_type = FRAME_HEADER.unpack(await asyncio.wait_for(self.reader.readexactly(5), ANSWER_TIMEOUT_S))
        body = await asyncio.wait_for(self.reader.readexactly(length), ANSWER_TIMEOUT_S)
        if message_type == DISCONNECT:
            raise AssertionError(f"node disconnected: reason {body[0]}, {body[2 : 2 + body[1]].decode()!r}")
        if message_type == COMMITTED:
            self._note_commit(body)
        return message_type, body

    async def read_until(self, wanted: int) -> bytes:
        """The next frame of type ``wanted``; COMMITTED pushes in between are noted, others skipped."""
        while True:
            message_type, body = await self.read()
            if message_type == wanted:
                return body

    def _note_commit(self, body: bytes) -> None:
        reader = Body(body)
        height, block_hash, _view, _committed_ns = reader.unpack(struct.Struct(">Q32sQQ"))
        proof_ids, _transfer_ids = reader.hashes(), reader.hashes()
        reader.finish()
        self.commits.append((height, block_hash, proof_ids))

    async def handshake(self, chain_id: bytes, validators: dict[int, bytes], node_id: int = 0, role: int = ROLE_CLIENT,
                        listen: tuple[str, int] = ("", 0)) -> None:  # fmt: skip
        """Section 5: HELLO both ways, then HELLO_ACK both ways; as a client unless told otherwise."""
        nonce = os.urandom(32)
        host = listen[0].encode()
        hello = HELLO_HEAD.pack(1, chain_id, node_id, role, self.key.public_key, nonce, listen[1]) + bytes([len(host)]) + host
        await self.send(HELLO, hello)
        reader = Body(await self.read_until(HELLO))
        version, their_chain, their_id, their_role, pubkey, their_nonce, _port = reader.unpack(HELLO_HEAD)
        reader.take(reader.take(1)[0])
        reader.finish()
        assert (version, their_chain) == (1, chain_id)
        assert their_role == ROLE_VALIDATOR and validators[their_id] == pubkey, "the node is not the genesis validator it claims"
        await self.send(HELLO_ACK, self.key.sign(ack_message(chain_id, their_nonce, self.key.public_key)))
        signature = await self.read_until(HELLO_ACK)
        assert crypto.verify(pubkey, ack_message(chain_id, nonce, pubkey), signature), "node's HELLO_ACK does not verify"

    async def status(self) -> dict[str, Any]:
        await self.send(STATUS_REQUEST, b"")
        payload = json.loads(await self.read_until(STATUS))
        assert isinstance(payload, dict)
        return payload

    async def committed_record(self, height: int) -> bytes:
        await self.send(BLOCK_REQUEST, struct.pack(">QI", height, 1))
        reader = Body(await self.read_until(BLOCK_RESPONSE))
        records = reader.blobs()
        reader.finish()
        assert records, f"no committed block at height {height}"
        return records[0]

    async def snapshot(self) -> tuple[int, bytes]:
        chunks: list[bytes] = []
        height, count = 0, 1
        while len(chunks) < count:
            await self.send(SNAPSHOT_REQUEST, struct.pack(">QI", height, len(chunks)))
            reader = Body(await self.read_until(SNAPSHOT_CHUNK))
            chunk_height, index, count = reader.unpack(struct.Struct(">QII"))
            chunks.append(reader.blob())
            reader.finish()
            assert index == len(chunks) - 1 and (height in (0, chunk_height)), "snapshot moved; no load runs here"
            height = chunk_height
        return height, b"".join(chunks)

    def close(self) -> None:
        self.writer.close()


@dataclass
class Block:
    header: bytes
    height: int
    items_root: bytes
    state_root: bytes
    proof_ids: list[bytes]
    transfer_ids: list[bytes]
    certificate_view: int
    certificate: list[tuple[int, bytes]]
    proofs: list[bytes]


def decode_record(record: bytes) -> Block:
    """Section 8: committed-block record = block, certificate, proofs, transfers."""
    outer = Body(record)
    encoded, certificate, proofs, _transfers = outer.blob(), outer.blob(), outer.blobs(), outer.blobs()
    outer.finish()
    block = Body(encoded)
    fields = block.unpack(BLOCK_HEADER)
    proof_ids, transfer_ids = block.hashes(), block.hashes()
    block.finish()
    cert = Body(certificate)
    view, count = struct.unpack(">QI", cert.take(12))
    votes = [struct.unpack(">I64s", cert.take(68)) for _ in range(count)]
    cert.finish()
    return Block(encoded[: BLOCK_HEADER.size], fields[0], fields[5], fields[6], proof_ids, transfer_ids, view, votes, proofs)


# -- a real network -----------------------------------------------------------------------------------
@pytest.fixture
def network(tmp_path: Path):  # type: ignore[no-untyped-def]
    """The README's network by hand: `popbench genesis --seed spec`, node i dials nodes 0 .. i-1."""
    yield from _run_network(tmp_path, VALIDATORS)


@pytest.fixture
def three_of_four(tmp_path: Path):  # type: ignore[no-untyped-def]
    """The same genesis of four, with validator 3 not running: its key is free for a test to speak as."""
    yield from _run_network(tmp_path, VALIDATORS - 1)


@pytest.fixture
def three_of_four_all_to_all(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Validators 0-2 of four, on a genesis that states the all-to-all vote path and leader reputation."""
    yield from _run_network(tmp_path, VALIDATORS - 1, {"votes": 0, "leader_reputation": 1})


def _run_network(tmp_path: Path, running: int, params: dict[str, int] | None = None):  # type: ignore[no-untyped-def]
    done = subprocess.run([POPBENCH, "genesis", "--validators", str(VALIDATORS), "--output", "genesis.json", "--seed", "spec"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    if params:
        data = json.loads((tmp_path / "genesis.json").read_text())
        data["params"].update(params)
        (tmp_path / "genesis.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    sockets = [_listening_socket() for _ in range(running)]
    ports = [sock.getsockname()[1] for sock in sockets]
    procs = []
    for node, sock in enumerate(sockets):
        peers = [arg for port in ports[:node] for arg in ("--peer", f"127.0.0.1:{port}")]
        with (tmp_path / f"node-{node}.log").open("wb") as log:
            procs.append(subprocess.Popen([POPBENCH, "node", "--genesis", "genesis.json", "--node-id", str(node), "--data-dir", "data",
                                           "--listen-fd", str(sock.fileno()), *peers], cwd=tmp_path, stdout=log,
                                          stderr=subprocess.STDOUT, pass_fds=(sock.fileno(),)))  # fmt: skip
    try:
        yield tmp_path, ports, done.stdout.strip()
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for sock in sockets:
            sock.close()


def test_a_client_written_from_the_spec_submits_a_proof_and_verifies_its_commit(network) -> None:  # type: ignore[no-untyped-def]
    root, ports, printed_chain_id = network
    genesis = json.loads((root / "genesis.json").read_text())
    chain_id = chain_id_of(root / "genesis.json")
    assert chain_id.hex() == printed_chain_id, "docs/genesis.md's chain id differs from what popbench genesis printed"
    try:
        asyncio.run(_submit_and_verify(genesis, chain_id, ports))
    except BaseException:
        for node in range(VALIDATORS):
            print(f"--- node-{node}.log\n" + (root / f"node-{node}.log").read_text(errors="replace")[-2000:])
        raise


async def _submit_and_verify(genesis: dict[str, Any], chain_id: bytes, ports: list[int]) -> None:
    validators = {v["node_id"]: bytes.fromhex(v["public_key"]) for v in genesis["validators"]}
    client = await _connect(ports[0], chain_id, validators)
    try:
        await _wait_for_full_mesh(client)
        await _check_opening_state(ports[0], chain_id, validators, genesis)  # the node whose state is checked after the commit
        owner = crypto.derive_key("spec-client", 0)
        proof, proof_id = make_proof(owner, chain_id, b"written from the spec", genesis["params"]["min_work_bits"])
        await client.send(SUBSCRIBE, bytes([TOPIC_COMMITS]))
        await client.send(SUBMIT, struct.pack(">IB", 7, KIND_PROOF) + proof)
        request_id, item_id, reason = struct.unpack(">I32sB", await client.read_until(SUBMIT_RESULT))
        assert (request_id, item_id, reason) == (7, proof_id, ACCEPTED)
        height, block_hash = await _wait_for_commit_of(client, proof_id)
        block = decode_record(await client.committed_record(height))
        _check_block(block, height, block_hash, proof, proof_id, chain_id, validators)
        await _check_state(client, genesis, owner)
        await _check_malformed_and_replayed(client, proof)
    finally:
        client.close()
    await _check_wrong_chain_is_refused(ports[1], chain_id)


async def _connect(port: int, chain_id: bytes, validators: dict[int, bytes], as_validator: tuple[int, crypto.SigningKey] | None = None,
                   listen: tuple[str, int] = ("", 0)) -> SpecClient:  # fmt: skip
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), ANSWER_TIMEOUT_S)
    client = SpecClient(reader, writer)
    if as_validator is None:
        await client.handshake(chain_id, validators)
    else:
        node_id, client.key = as_validator
        await client.handshake(chain_id, validators, node_id, ROLE_VALIDATOR, listen)
    return client


async def _wait_for_full_mesh(client: SpecClient) -> None:
    deadline = time.monotonic() + COMMIT_TIMEOUT_S
    while (status := await client.status())["peers"] < VALIDATORS - 1:
        assert time.monotonic() < deadline, f"node 0 never linked to every validator: {status}"
        await asyncio.sleep(0.2)  # polling period of a condition with a deadline


async def _wait_for_commit_of(client: SpecClient, proof_id: bytes) -> tuple[int, bytes]:
    deadline = time.monotonic() + COMMIT_TIMEOUT_S
    while True:
        for height, block_hash, proof_ids in client.commits:
            if proof_id in proof_ids:
                return height, block_hash
        assert time.monotonic() < deadline, f"proof not committed in {COMMIT_TIMEOUT_S} s; commits seen: {client.commits}"
        await client.read_until(COMMITTED)


def _check_block(block: Block, height: int, block_hash: bytes, proof: bytes, proof_id: bytes, chain_id: bytes,
                 validators: dict[int, bytes]) -> None:  # fmt: skip
    assert block.height == height and sha256(block.header) == block_hash, "block hash is not sha256 of the 124-byte header"
    assert merkle_root(block.proof_ids + block.transfer_ids) == block.items_root
    assert proof_id in block.proof_ids and proof in block.proofs
    # Section 7's id, from the proof's bytes alone, names every proof of the block; the two near misses
    # (the work digest, no domain string; the hash of the whole encoding) name none.
    assert [proof_id_of(encoded) for encoded in block.proofs] == block.proof_ids
    for encoded in block.proofs:
        assert sha256(encoded[:-64]) not in block.proof_ids and sha256(encoded) not in block.proof_ids
    quorum = VALIDATORS - (VALIDATORS - 1) // 3
    voters = [voter for voter, _ in block.certificate]
    assert len(set(voters)) == len(voters) >= quorum
    message = commit_vote_message(chain_id, block.certificate_view, height, block_hash)
    assert all(crypto.verify(validators[voter], message, signature) for voter, signature in block.certificate)


async def _check_state(client: SpecClient, genesis: dict[str, Any], owner: crypto.SigningKey) -> None:
    height, records = await client.snapshot()
    block = decode_record(await client.committed_record(height))
    assert len(records) % ACCOUNT.size == 0 and state_root(records) == block.state_root
    accounts = {address: rest for address, *rest in ACCOUNT.iter_unpack(records)}
    owner_account = accounts[sha256(owner.public_key)[:20]]
    reward = genesis["params"]["reward_per_proof"]
    assert owner_account == [reward, 0, reward, 0], "the owner is credited reward_per_proof (balance and rewards)"


async def _check_opening_state(port: int, chain_id: bytes, validators: dict[int, bytes], genesis: dict[str, Any]) -> None:
    """Before any commit a node serves the opening state at height 0; `popbench genesis` gives every
    validator a balance too, so each account here holds a balance and a stake in one record."""
    client = await _connect(port, chain_id, validators)
    try:
        height, records = await client.snapshot()
    finally:
        client.close()
    assert height == 0, "a block was committed before anything was submitted"
    assert records == opening_records(genesis), "the opening state is not docs/genesis.md's"
    assert all(balance and stake for _, balance, stake, _, _ in ACCOUNT.iter_unpack(records))


async def _check_malformed_and_replayed(client: SpecClient, proof: bytes) -> None:
    """Section 7: a malformed item's id is sha256 of its raw bytes; a committed proof is a replay."""
    garbage = b"not a proof"
    await client.send(SUBMIT, struct.pack(">IB", 8, KIND_PROOF) + garbage)
    assert struct.unpack(">I32sB", await client.read_until(SUBMIT_RESULT)) == (8, sha256(garbage), MALFORMED)
    await client.send(SUBMIT, struct.pack(">IB", 9, KIND_PROOF) + proof)
    request_id, _item_id, reason = struct.unpack(">I32sB", await client.read_until(SUBMIT_RESULT))
    assert (request_id, reason) == (9, REPLAY)


async def _check_wrong_chain_is_refused(port: int, chain_id: bytes) -> None:
    """Section 5: a HELLO for another chain is answered by DISCONNECT(WRONG_CHAIN)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), ANSWER_TIMEOUT_S)
    try:
        client = SpecClient(reader, writer)
        other_chain = sha256(chain_id)
        hello = HELLO_HEAD.pack(1, other_chain, 0, ROLE_CLIENT, client.key.public_key, os.urandom(32), 0) + b"\x00"
        await client.send(HELLO, hello)
        with pytest.raises(AssertionError, match=f"node disconnected: reason {WRONG_CHAIN},"):
            await client.read_until(HELLO_ACK)
    finally:
        writer.close()


# -- the appendix's test vectors --------------------------------------------------------------------
def test_the_spec_test_vectors_follow_from_the_spec() -> None:
    spec = SPEC.read_text()
    key, chain_id = crypto.SigningKey((1).to_bytes(32, "big")), bytes([0xAA]) * 32
    a, b, c = bytes([0x11]) * 32, bytes([0x22]) * 32, bytes([0x33]) * 32
    two_accounts = ACCOUNT.pack(bytes([1]) * 20, 1000, 10000, 0, 0) + ACCOUNT.pack(bytes([2]) * 20, 5, 0, 3, 1)
    proof, proof_id = make_proof(key, chain_id, b"hi", 0, nonce=0)
    transfer_signing = b"popbench/transfer/v1" + TRANSFER_BODY.pack(chain_id, key.public_key, bytes([0xBB]) * 20, 5, 1, 0, 0)
    ack = ack_message(chain_id, bytes([0xCC]) * 32, key.public_key)
    no_lock = sha256(struct.pack(">Q", 0) + bytes(32))  # section 8: a VIEW_CHANGE that prepared nothing
    view_change = b"popbench/vote/v1/view-change/" + chain_id + struct.pack(">QQ", 1, 1) + no_lock
    computed = [
        merkle_root([]), merkle_root([a]), merkle_root([a, b]), merkle_root([a, b, c]), state_root(two_accounts),
        key.public_key, sha256(key.public_key)[:20], proof_id, proof[-64:], sha256(proof[: PROOF_HEAD.size + 2 + 8]),
        proof[: PROOF_HEAD.size + 2], sha256(proof), proof_id_of(proof),
        sha256(transfer_signing), key.sign(transfer_signing), key.sign(ack), no_lock, key.sign(view_change),
    ]  # fmt: skip
    assert len(ack) == 114 and BLOCK_HEADER.size == 124 and len(proof) == 152 + 2 and TRANSFER_BODY.size + 64 == 174
    missing = [value.hex() for value in computed if value.hex() not in spec]
    assert not missing, f"docs/protocol.md lacks these vectors (or states others): {missing}"


# -- docs/genesis.md, "Leader schedule" ---------------------------------------------------------------
GENESIS_SPEC = SPEC.with_name("genesis.md")
MAX_SCHEDULE_SLOTS = 10_000


def spec_leader_schedule(validators: list[tuple[int, int]]) -> list[int]:
    """(node id, stake) in file order -> one rotation of node ids, by the three steps of the spec."""
    divisor = 0
    for _, stake in validators:
        divisor = math.gcd(divisor, stake)
    weights = [stake // divisor for _, stake in validators]
    while sum(weights) > MAX_SCHEDULE_SLOTS and max(weights) > 1:
        total = sum(weights)
        weights = [max(1, w * MAX_SCHEDULE_SLOTS // total) for w in weights]
    total, credit, rotation = sum(weights), [0] * len(weights), []
    for _ in range(total):
        credit = [c + w for c, w in zip(credit, weights, strict=True)]
        best = max(credit)
        chosen = credit.index(best)  # the earliest validator among the highest credits
        credit[chosen] -= total
        rotation.append(validators[chosen][0])
    return rotation


def rotation_digest(rotation: list[int]) -> str:
    return sha256(b"".join(struct.pack(">I", node_id) for node_id in rotation)).hex()


def genesis_of(stakes: list[int], node_ids: list[int] | None = None, balances: dict[str, int] | None = None) -> Genesis:
    """A genesis file's content (docs/genesis.md, "Format") read by popbench itself."""
    ids = node_ids if node_ids is not None else list(range(len(stakes)))
    validators = [{"node_id": node_id, "public_key": crypto.derive_key("spec-schedule", node_id).public_key.hex(), "stake": stake}
                  for node_id, stake in zip(ids, stakes, strict=True)]  # fmt: skip
    return genesis_from_dict({"validators": validators, "balances": balances or {}}, "test")


def test_the_leader_schedule_for_unequal_stakes_follows_from_the_spec() -> None:
    spec = GENESIS_SPEC.read_text()
    rng = random.Random(21)
    cases = [
        [3000, 1000, 1000, 1000], [1000, 2000, 3000], [12345, 6789, 1000, 1001], [10**9] + [1000] * 20,
        [24643, 27274, 8496, 20370], [10**18, 1000, 10**6 + 7], [1000] * 7,
        *([rng.randrange(1000, 10**rng.randrange(4, 12)) for _ in range(rng.randrange(2, 40))] for _ in range(30)),
    ]  # fmt: skip
    for stakes in cases:
        node_ids = list(range(len(stakes)))
        rng.shuffle(node_ids)  # the file order decides, not the ids
        expected = spec_leader_schedule(list(zip(node_ids, stakes, strict=True)))
        assert list(genesis_of(stakes, node_ids).leader_schedule) == expected, f"stakes {stakes}"
    assert spec_leader_schedule([(0, 3000), (1, 1000), (2, 1000), (3, 1000)]) == [0, 1, 0, 2, 3, 0]
    assert spec_leader_schedule([(0, 1000), (1, 2000), (2, 3000)]) == [2, 1, 0, 2, 1, 2]
    scaled = spec_leader_schedule([(i, s) for i, s in enumerate([12345, 6789, 1000, 1001])])
    assert len(scaled) == 9999 and scaled[:16] == [0, 1, 0, 0, 1, 0, 2, 0, 1, 0, 1, 0, 3, 0, 1, 0]
    twice = spec_leader_schedule([(i, s) for i, s in enumerate([10**9] + [1000] * 20)])
    assert len(twice) == 10_000 and twice.count(0) == 9980
    missing = [digest for digest in (rotation_digest(scaled), rotation_digest(twice)) if digest not in spec]
    assert not missing, f"docs/genesis.md lacks these schedule digests (or states others): {missing}"


# -- docs/genesis.md, "Rewards and the opening state" -------------------------------------------------
def test_the_opening_state_of_mixed_accounts_follows_from_the_spec(tmp_path: Path) -> None:
    key1, key2 = (crypto.SigningKey(secret.to_bytes(32, "big")) for secret in (1, 2))
    address1 = sha256(key1.public_key)[:20]
    example = {
        "validators": [{"node_id": 0, "public_key": key1.public_key.hex(), "stake": 5000},
                       {"node_id": 1, "public_key": key2.public_key.hex(), "stake": 3000}],
        "balances": {address1.hex(): 700, "03" * 20: 42},
    }  # fmt: skip
    records = opening_records(example)
    assert len(records) == 3 * ACCOUNT.size, "a validator with a balance is one account, not two"
    assert ACCOUNT.pack(address1, 700, 5000, 0, 0) in records
    assert state_root(records).hex() in GENESIS_SPEC.read_text(), "docs/genesis.md lacks the example's state root"
    rng = random.Random(4)
    others = [crypto.derive_key("spec-schedule", i) for i in range(6)]
    mixed = {"validators": [{"node_id": i, "public_key": k.public_key.hex(), "stake": 1000 + i} for i, k in enumerate(others[:4])],
             "balances": {sha256(k.public_key)[:20].hex(): rng.randrange(0, 10**6) for k in others[2:]} | {"00" * 20: 0}}  # fmt: skip
    for number, data in enumerate((example, mixed)):
        store = Store(tmp_path / f"opening-{number}.sqlite")
        try:
            ledger = Ledger(genesis_from_dict(data, "test"), store)
            assert ledger.state.encode_snapshot() == opening_records(data)
            assert ledger.state.root() == state_root(opening_records(data))
        finally:
            store.close()


# -- section 5, "Links between nodes", against a real node ---------------------------------------------
def spec_seed_secret(seed: str, index: int) -> bytes:
    """docs/genesis.md, "Keys file": sha256(UTF-8 seed ‖ "/" ‖ decimal index) read big-endian, mod (n - 1), + 1."""
    digest = sha256(seed.encode() + b"/" + str(index).encode())
    return (int.from_bytes(digest, "big") % (SECP256K1_ORDER - 1) + 1).to_bytes(32, "big")


def spec_new_link_replaces_old(old_dialled_by: int, new_dialled_by: int) -> bool:
    """Section 5, "Two links to one validator": the new link wins unless the old one's dialler has a lower id."""
    return new_dialled_by <= old_dialled_by


def test_two_links_dialled_the_same_way_are_resolved_as_the_spec_says(three_of_four) -> None:  # type: ignore[no-untyped-def]
    root, ports, _ = three_of_four
    genesis = json.loads((root / "genesis.json").read_text())
    try:
        asyncio.run(_dial_twice_as_validator_3(genesis, chain_id_of(root / "genesis.json"), ports))
    except BaseException:
        for node in range(len(ports)):
            print(f"--- node-{node}.log\n" + (root / f"node-{node}.log").read_text(errors="replace")[-2000:])
        raise


async def _dial_twice_as_validator_3(genesis: dict[str, Any], chain_id: bytes, ports: list[int]) -> None:
    """Validator 3 (not running; its key from the seed rule) dials node 0 twice, the way a node that dials
    its --peer list and what PEERS taught it may. Both links are dialled by 3, so the newer must stay."""
    validators = {v["node_id"]: bytes.fromhex(v["public_key"]) for v in genesis["validators"]}
    me = 3
    key = crypto.SigningKey(spec_seed_secret("spec", me))
    assert key.public_key == validators[me], "docs/genesis.md's seed rule does not give validator 3's genesis key"
    listener = _listening_socket()  # the address validator 3 announces; nobody dials a higher id from PEERS
    announced = ("127.0.0.1", listener.getsockname()[1])
    observer = await _connect(ports[0], chain_id, validators)
    links: list[SpecClient] = []
    try:
        await _wait_for_peer_ids(observer, [1, 2])
        links.append(await _connect(ports[0], chain_id, validators, (me, key), announced))
        await _wait_for_peer_ids(observer, [1, 2, me])
        links.append(await _connect(ports[0], chain_id, validators, (me, key), announced))
        older, newer = links
        replaced = spec_new_link_replaces_old(old_dialled_by=me, new_dialled_by=me)
        assert replaced, "the spec says the newer of two links dialled by one side replaces the older"
        closed, kept = (older, newer) if replaced else (newer, older)
        with pytest.raises(AssertionError, match=f"node disconnected: reason {DUPLICATE_PEER},"):
            await closed.read_until(PONG)  # nothing was asked on it: only a DISCONNECT ends this read
        await kept.send(PING, struct.pack(">QQ", 21, 5))
        assert await kept.read_until(PONG) == struct.pack(">QQ", 21, 5), "the link the spec keeps is not open"
        status = await observer.status()
        assert (status["peers"], status["peer_ids"]) == (3, [1, 2, me]), "STATUS peers counts inbound validator links"
        entries = await _peers_answer(kept)
        assert entries[0] == (0, ROLE_VALIDATOR, "127.0.0.1", ports[0]), "PEERS begins with the node itself"
        expected = {
            (1, ROLE_VALIDATOR, "127.0.0.1", ports[1]),
            (2, ROLE_VALIDATOR, "127.0.0.1", ports[2]),
            (me, ROLE_VALIDATOR, *announced),
        }
        assert len(entries) == 4 and set(entries[1:]) == expected, "PEERS lists the validators' HELLO addresses"
    finally:
        for client in [observer, *links]:
            client.close()
        listener.close()


async def _wait_for_peer_ids(client: SpecClient, wanted: list[int]) -> None:
    deadline = time.monotonic() + COMMIT_TIMEOUT_S
    while (status := await client.status())["peer_ids"] != wanted:
        assert time.monotonic() < deadline, f"node never linked to exactly {wanted}: {status}"
        await asyncio.sleep(0.1)  # polling period of a condition with a deadline


async def _peers_answer(client: SpecClient) -> list[tuple[int, int, str, int]]:
    await client.send(PEERS_REQUEST, b"")
    reader = Body(await client.read_until(PEERS))
    count = reader.u32()
    entries = [reader.unpack(PEER_ENTRY) for _ in range(count)]
    reader.finish()
    return [(node_id, role, ".".join(str(b) for b in host), port) for node_id, role, host, port in entries]


# -- docs/genesis.md, "Keys file", and section 9's BOND -----------------------------------------------
def test_seed_derived_keys_follow_from_the_spec() -> None:
    spec = GENESIS_SPEC.read_text()
    for seed, index in (("by-hand", 0), ("by-hand", 1), ("é", 12)):
        secret = spec_seed_secret(seed, index)
        message = seed.encode() + b"/" + str(index).encode()
        public_key = crypto.SigningKey(secret).public_key
        assert crypto.derive_key(seed, index).secret == secret, f"popbench derives another key from {seed!r}, {index}"
        missing = [value.hex() for value in (message, secret, public_key) if f"`{value.hex()}`" not in spec]
        assert not missing, f"docs/genesis.md lacks the key vectors of {seed!r}, {index}: {missing}"


def test_a_bond_moves_its_amount_from_balance_to_stake(tmp_path: Path) -> None:
    """Section 9's example, in a block of popbench's own building: BOND 300 with fee 2 from (1000, 0, 0)."""
    proposer, sender = crypto.SigningKey((1).to_bytes(32, "big")), crypto.derive_key("spec-bond", 0)
    proposer_address, sender_address = sha256(proposer.public_key)[:20], sha256(sender.public_key)[:20]
    data = {"validators": [{"node_id": 0, "public_key": proposer.public_key.hex(), "stake": 5000}],
            "balances": {sender_address.hex(): 1000}}  # fmt: skip
    genesis = genesis_from_dict(data, "test")
    bond = Transfer.create(sender, genesis.chain_id, bytes([0xBB]) * 20, 300, 2, 0, TransferKind.BOND)
    params = genesis.params
    credited = params.block_reward + params.validator_reward  # the proposer is the only validator
    expected = b"".join(sorted([
        ACCOUNT.pack(sender_address, 1000 - 300 - 2, 300, 0, 1),  # no account for the unused recipient
        ACCOUNT.pack(proposer_address, 2 + credited, 5000, credited, 0),
    ]))  # fmt: skip
    store = Store(tmp_path / "bond.sqlite")
    try:
        ledger = Ledger(genesis, store)
        block, post = ledger.build_block(0, 0, [PoolItem(bond.id, ItemKind.TRANSFER, bond, bond.encode())])
        assert post.encode_snapshot() == expected and block.state_root == state_root(expected)
    finally:
        store.close()


# -- docs/consensus.md, "Leader reputation" -----------------------------------------------------------
REPUTATION_WINDOW = 1024  # step 4: missed turns older than this are forgotten, and no exclusion is longer


class SpecLeaders:
    """Who leads (v, h), by docs/consensus.md's "Leader reputation", steps 1-8, from committed headers."""

    def __init__(self, schedule: list[int], n: int, reputation: bool = True) -> None:
        self.schedule, self.n, self.f, self.reputation = schedule, n, (n - 1) // 3, reputation
        self.head_view = 0
        self.misses: dict[int, list[int]] = {}  # validator -> heights of its missed turns, oldest first
        self.candidates, self.excluded, self.probation = list(schedule), set[int](), set[int]()

    def leader(self, view: int, height: int) -> int:
        return self.candidates[(view + height) % len(self.candidates)]

    def exclusion(self, misses: int) -> int:
        return min(16 * self.n * 2 ** (misses - 1), REPUTATION_WINDOW)  # step 5: E(m)

    def committed(self, height: int, view: int, proposer: int) -> None:
        """Block ``height``, whose header says ``view`` and ``proposer``, is the new head."""
        if self.reputation:
            for failed in range(max(self.head_view, view - self.n), view):  # step 1: the last n views at most
                missed = self.leader(failed, height)
                if missed != proposer:
                    self.misses.setdefault(missed, []).append(height)
            self.misses.pop(proposer, None)  # step 2
        self.head_view = max(self.head_view, view)  # step 3
        if not self.reputation:
            return
        following = height + 1
        kept = {node: [h for h in heights if h > following - REPUTATION_WINDOW] for node, heights in self.misses.items()}
        self.misses = {node: heights for node, heights in kept.items() if heights}  # step 4
        qualify = [node for node, heights in self.misses.items() if following < heights[-1] + self.exclusion(len(heights))]
        qualify.sort(key=lambda node: (-self.misses[node][-1], node))  # step 6: the most recent miss first
        self.excluded = set(qualify[: self.f])
        self.probation = set(self.misses) - self.excluded  # step 7
        self.candidates = [slot for slot in self.schedule if slot not in self.excluded] or list(self.schedule)  # step 8


def test_the_leader_reputation_rule_of_the_spec_is_popbench_s() -> None:
    """Random chains of headers (leaders down, views lost otherwise, re-proposed headers) fed to the spec's
    rule and to popbench.pop.leaders: the same leaders, exclusions and probations at every height."""
    from popbench.model.block import Block as PopBlock
    from popbench.pop.leaders import LeaderSchedule

    rng = random.Random(8)
    heights_with_exclusions = 0
    for case in range(16):
        size = rng.choice((4, 7, 10))
        stakes = [1000] * size if case % 2 else [1000 * rng.randrange(1, 4) for _ in range(size)]  # a short weighted schedule
        reputation = case % 8 != 7
        spec = SpecLeaders(spec_leader_schedule(list(enumerate(stakes))), size, reputation)
        ours = LeaderSchedule(genesis_of(stakes), reputation=reputation)
        down: set[int] = set(rng.sample(range(size), rng.randrange(0, (size - 1) // 3 + 2)))
        view = 0
        for height in range(1, 1200):
            if rng.random() < 0.02:
                down = set(rng.sample(range(size), rng.randrange(0, 3)))
            view += rng.random() < 0.03  # a view lost to something else than its leader
            while spec.leader(view, height) in down:
                view += 1
            header_view = view
            if view > spec.head_view and rng.random() < 0.1:  # a re-proposal keeps an earlier view's header
                header_view = rng.randrange(spec.head_view, view)
            proposer = spec.leader(header_view, height)
            assert [spec.leader(v, height) for v in range(view, view + 12)] == [ours.leader(v, height) for v in range(view, view + 12)]
            spec.committed(height, header_view, proposer)
            ours.advance(PopBlock(height, header_view, bytes(32), proposer, 0, bytes(32), bytes(32), [], []))
            assert spec.excluded == set(ours.excluded()), f"case {case}, height {height}"
            assert spec.probation == {node for node in range(size) if ours.on_probation(node)}, f"case {case}, height {height}"
            heights_with_exclusions += bool(spec.excluded)
        assert reputation or not spec.misses
    assert heights_with_exclusions > 5000, "the chains exercise exclusions"


Chain = list[tuple[int, int, int, list[int]]]


def _with_one_down(leaders: SpecLeaders, heights: range, down: int, view: int = 0,
                   reproposed_at: int | None = None) -> tuple[Chain, dict[int, set[int]], dict[int, set[int]]]:  # fmt: skip
    """(height, header view, proposer, views that failed first) as the network commits with ``down`` never
    proposing, and who was excluded and on probation at each height. At ``reproposed_at`` the failed
    view's leader had got its block prepared before it stopped: it is re-proposed, header unchanged."""
    chain: Chain = []
    excluded: dict[int, set[int]] = {}
    probation: dict[int, set[int]] = {}
    for height in heights:
        excluded[height], probation[height] = set(leaders.excluded), set(leaders.probation)
        failed = []
        while leaders.leader(view, height) == down:
            failed.append(view)
            view += 1
        header_view = failed[-1] if height == reproposed_at else view
        chain.append((height, header_view, leaders.leader(header_view, height), failed))
        leaders.committed(height, header_view, chain[-1][2])
    return chain, excluded, probation


def test_the_worked_example_s_leaders_follow_from_the_spec() -> None:
    """docs/protocol.md 13.8: validator 3 of four down from height 3, by the spec's reputation rule."""
    assert "### 13.8 Worked example: n = 4, the leader of height 3 in view 0 is down" in SPEC.read_text()
    leaders = SpecLeaders([0, 1, 2, 3], 4)
    chain, excluded, probation = _with_one_down(leaders, range(1, 216), 3)
    assert chain[:7] == [(1, 0, 1, []), (2, 0, 2, []), (3, 1, 0, [0]), (4, 1, 2, []), (5, 1, 0, []), (6, 1, 1, []), (7, 1, 2, [])]
    assert all(excluded[h] == {3} for h in range(4, 67)) and excluded[67] == set() and probation[67] == {3}
    assert chain[69] == (70, 2, 0, [1]) and probation[70] == {3}, "3's turn at (1, 70), on probation"
    assert [h for h, _, _, failed in chain if failed] == [3, 70, 201]
    assert all(excluded[h] == {3} for h in range(71, 198)) and excluded[198] == set()
    assert [leaders.exclusion(m) for m in (1, 2, 3, 4, 5, 6)] == [64, 128, 256, 512, 1024, 1024]
    plain, _, _ = _with_one_down(SpecLeaders([0, 1, 2, 3], 4, reputation=False), range(1, 14), 3)
    assert [(h, failed) for h, _, _, failed in plain if failed] == [(3, [0]), (6, [1]), (9, [2]), (12, [3])]
    # The variant: B, built by 3 in view 0, is re-proposed and commits in view 1 with its header.
    leaders = SpecLeaders([0, 1, 2, 3], 4)
    variant, excluded, probation = _with_one_down(leaders, range(1, 9), 3, reproposed_at=3)
    assert variant[2] == (3, 0, 3, [0]) and excluded[4] == set(), "no failed view is read at height 3"
    assert excluded[5] == {0}, "view 0 reads as a failed view of height 4, led by 0"
    assert variant[3:] == [(4, 1, 1, []), (5, 1, 1, []), (6, 1, 2, []), (7, 2, 1, [1]), (8, 2, 1, [])]
    assert excluded[8] == {3} and probation[8] == {0}


# -- section 13, view changes step by step --------------------------------------------------------------
PRE_PREPARE, PREPARE, COMMIT, VIEW_CHANGE, NEW_VIEW = 20, 21, 22, 23, 24
VOTE = struct.Struct(">QQ32sI64s")  # 4. PREPARE and COMMIT
VIEW_CHANGE_HEAD = struct.Struct(">QQIQ")  # 13.3
VOTE_ENTRY = struct.Struct(">I64s")  # 13.3: an entry of prepared_votes


def vote_message(kind: str, chain_id: bytes, view: int, height: int, block_hash: bytes) -> bytes:
    """Section 8: what PREPARE, COMMIT and (with a digest for the hash) VIEW_CHANGE sign."""
    return b"popbench/vote/v1/" + kind.encode() + b"/" + chain_id + struct.pack(">QQ", view, height) + block_hash


def blob(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def decode_block(encoded: bytes) -> tuple[tuple[Any, ...], list[bytes], list[bytes]]:
    """Section 8: (header fields, proof ids, transfer ids); AssertionError if it does not decode."""
    reader = Body(encoded)
    fields = reader.unpack(BLOCK_HEADER)
    proof_ids, transfer_ids = reader.hashes(), reader.hashes()
    reader.finish()
    return fields, proof_ids, transfer_ids


@dataclass
class SpecViewChange:
    """Section 13.3."""

    new_view: int
    height: int
    voter: int
    prepared_view: int
    prepared_block: bytes
    prepared_votes: bytes
    signature: bytes

    def signed_bytes(self, chain_id: bytes) -> bytes:
        block_hash = sha256(self.prepared_block[: BLOCK_HEADER.size]) if self.prepared_block else bytes(32)
        digest = sha256(struct.pack(">Q", self.prepared_view) + block_hash + self.prepared_votes)
        return vote_message("view-change", chain_id, self.new_view, self.height, digest)

    def body(self) -> bytes:
        head = VIEW_CHANGE_HEAD.pack(self.new_view, self.height, self.voter, self.prepared_view)
        return head + blob(self.prepared_block) + blob(self.prepared_votes) + self.signature

    @classmethod
    def decode(cls, body: bytes) -> SpecViewChange:
        reader = Body(body)
        head = reader.unpack(VIEW_CHANGE_HEAD)
        block, votes, signature = reader.blob(), reader.blob(), reader.take(64)
        reader.finish()
        return cls(*head, block, votes, signature)


def signed_view_change(key: crypto.SigningKey, chain_id: bytes, new_view: int, height: int, voter: int, prepared_view: int = 0,
                       block: bytes = b"", votes: bytes = b"") -> SpecViewChange:  # fmt: skip
    change = SpecViewChange(new_view, height, voter, prepared_view, block, votes, bytes(64))
    change.signature = key.sign(change.signed_bytes(chain_id))
    return change


def new_view_body(new_view: int, height: int, bodies: list[bytes]) -> bytes:
    """Section 13.5."""
    return struct.pack(">QQI", new_view, height, len(bodies)) + b"".join(blob(body) for body in bodies)


def spec_valid_lock(change: SpecViewChange, new_view: int, chain_id: bytes, validators: dict[int, bytes], quorum: int) -> bool:
    """Section 13.6, step 6."""
    if not change.prepared_block or change.prepared_view >= new_view or len(change.prepared_votes) % VOTE_ENTRY.size:
        return False
    try:
        fields, _, _ = decode_block(change.prepared_block)
    except AssertionError:
        return False
    if fields[0] != change.height:
        return False
    message = vote_message("prepare", chain_id, change.prepared_view, change.height, sha256(change.prepared_block[: BLOCK_HEADER.size]))
    entries = dict(VOTE_ENTRY.iter_unpack(change.prepared_votes))  # one per voter
    valid = [voter for voter, signature in entries.items() if voter in validators and crypto.verify(validators[voter], message, signature)]
    return len(valid) >= quorum


def spec_check_new_view(body: bytes, height: int, chain_id: bytes, validators: dict[int, bytes],
                        quorum: int) -> tuple[int, list[bytes], bytes | None, list[int]]:  # fmt: skip
    """Section 13.6, steps 5-7: (new_view, the VIEW_CHANGE bodies, the obligation or None, its holders).
    AssertionError where the spec refuses the NEW_VIEW."""
    reader = Body(body)
    new_view, nv_height = reader.unpack(struct.Struct(">QQ"))
    bodies = reader.blobs()
    reader.finish()
    assert nv_height == height, f"NEW_VIEW for height {nv_height}, not {height}"
    by_voter: dict[int, SpecViewChange] = {}
    for raw in bodies:
        change = SpecViewChange.decode(raw)
        assert (change.new_view, change.height) == (new_view, height) and change.voter in validators, change
        if change.prepared_block:
            decode_block(change.prepared_block)
        assert crypto.verify(validators[change.voter], change.signed_bytes(chain_id), change.signature), f"bad signature of {change.voter}"
        by_voter[change.voter] = change
    assert len(by_voter) >= quorum, f"NEW_VIEW carries {len(by_voter)} validators' VIEW_CHANGEs, quorum is {quorum}"
    best: SpecViewChange | None = None
    for change in by_voter.values():
        if (best is None or change.prepared_view > best.prepared_view) and spec_valid_lock(change, new_view, chain_id, validators, quorum):
            best = change
    if best is None:
        return new_view, bodies, None, []
    return new_view, bodies, best.prepared_block, sorted(voter for voter, _ in VOTE_ENTRY.iter_unpack(best.prepared_votes))


def test_the_view_change_vectors_follow_from_the_spec() -> None:
    """The appendix's view-change vectors, recomputed from section 13 with the seed keys of
    docs/genesis.md; popbench's own encoding and signed bytes agree, and 13.6 derives the obligations."""
    from popbench.genesis import make_genesis
    from popbench.pop.pbft_round import view_change_message
    from popbench.wire import NewView, ViewChange

    spec = "".join(SPEC.read_text().split())  # the appendix spreads long hex over lines
    genesis, _ = make_genesis(VALIDATORS, seed="spec")  # what `popbench genesis --validators 4 --seed spec` writes
    chain_id, quorum = genesis.chain_id, genesis.quorum
    keys = [crypto.SigningKey(spec_seed_secret("spec", i)) for i in range(VALIDATORS)]
    validators = {i: key.public_key for i, key in enumerate(keys)}
    assert validators == genesis.public_keys
    no_lock = [signed_view_change(keys[i], chain_id, 1, 3, i) for i in range(3)]
    unlocked_new_view = new_view_body(1, 3, [change.body() for change in no_lock])
    leaf = bytes([0x11]) * 32
    header = BLOCK_HEADER.pack(3, 0, bytes([0x22]) * 32, 3, 1_700_000_000_000_000_000, merkle_root([leaf]), bytes([0x33]) * 32)
    block = header + struct.pack(">I", 1) + leaf + struct.pack(">I", 0)
    prepares = {i: keys[i].sign(vote_message("prepare", chain_id, 0, 3, sha256(header))) for i in (0, 1, 3)}
    votes = b"".join(VOTE_ENTRY.pack(voter, signature) for voter, signature in sorted(prepares.items()))
    locked = [signed_view_change(keys[i], chain_id, 1, 3, i, 0, block, votes) for i in (0, 1)]
    locked_new_view = new_view_body(1, 3, [locked[0].body(), locked[1].body(), no_lock[2].body()])
    one = no_lock[1]
    assert one.signed_bytes(chain_id) == b"popbench/vote/v1/view-change/" + chain_id + struct.pack(">QQ", 1, 3) + sha256(bytes(40))
    sizes = [
        len(one.signed_bytes(chain_id)),
        len(one.body()),
        len(unlocked_new_view),
        len(block),
        len(locked[0].body()),
        len(locked_new_view),
    ]
    assert sizes == [109, 100, 332, 164, 468, 1068]
    computed = [
        chain_id, b"popbench/vote/v1/view-change/", one.signature, one.body(), unlocked_new_view, block, sha256(header),
        *prepares.values(), locked[0].signed_bytes(chain_id)[-32:], locked[0].signature, sha256(locked[0].body()),
        sha256(locked_new_view),
    ]  # fmt: skip
    missing = [value.hex() for value in computed if value.hex() not in spec]
    assert not missing, f"docs/protocol.md lacks these view-change vectors (or states others): {missing}"
    assert spec_check_new_view(unlocked_new_view, 3, chain_id, validators, quorum)[2:] == (None, [])
    assert spec_check_new_view(locked_new_view, 3, chain_id, validators, quorum)[2:] == (block, [0, 1, 3])
    for change in [*no_lock, *locked]:  # popbench's own messages, byte for byte
        ours = ViewChange(change.new_view, change.height, change.voter, change.prepared_view, change.prepared_block,
                          change.prepared_votes, change.signature)  # fmt: skip
        assert ours.encode_body() == change.body() and view_change_message(chain_id, ours) == change.signed_bytes(chain_id)
    assert NewView(1, 3, [change.body() for change in no_lock]).encode_body() == unlocked_new_view


# -- section 13 against real nodes: validator 3 of four takes part in a view change -------------------------
Inbox = asyncio.Queue[tuple[int, int, bytes]]


def test_a_view_change_taken_part_in_by_the_spec_commits_in_the_new_view(three_of_four_all_to_all) -> None:  # type: ignore[no-untyped-def]
    root, ports, printed_chain_id = three_of_four_all_to_all
    genesis = json.loads((root / "genesis.json").read_text())
    chain_id = chain_id_of(root / "genesis.json")
    assert chain_id.hex() == printed_chain_id, "stating parameters at their default does not change the chain id"
    try:
        asyncio.run(_view_change_as_validator_3(genesis, chain_id, ports))
    except BaseException:
        for node in range(len(ports)):
            print(f"--- node-{node}.log\n" + (root / f"node-{node}.log").read_text(errors="replace")[-2000:])
            events = root / "data" / f"node-{node}.events.jsonl"
            if events.exists():
                print(f"--- node-{node}.events.jsonl\n" + "".join(events.read_text().splitlines(keepends=True)[-25:]))
        raise


async def _pump(node: int, link: SpecClient, inbox: Inbox, announced: tuple[str, int]) -> None:
    """Validator 3's side of one link: it answers what a validator is asked (section 6) and hands every
    frame on; a closed link is handed on as type -1."""
    try:
        while True:
            length, message_type = FRAME_HEADER.unpack(await link.reader.readexactly(5))
            body = await link.reader.readexactly(length)
            if message_type == BLOCK_REQUEST:
                await link.send(BLOCK_RESPONSE, struct.pack(">I", 0))  # it holds no committed block: an empty list
            elif message_type == PING:
                await link.send(PONG, body)
            elif message_type == PEERS_REQUEST:
                host = bytes(int(part) for part in announced[0].split("."))
                await link.send(PEERS, struct.pack(">I", 1) + PEER_ENTRY.pack(3, ROLE_VALIDATOR, host, announced[1]))
            await inbox.put((node, message_type, body))
    except (asyncio.IncompleteReadError, ConnectionError) as err:
        await inbox.put((node, -1, repr(err).encode()))


async def _next_frame(inbox: Inbox, wanted: set[int]) -> tuple[int, int, bytes]:
    """The next frame of a type in ``wanted`` from any link; a DISCONNECT or a closed link fails the test."""
    while True:
        node, message_type, body = await asyncio.wait_for(inbox.get(), COMMIT_TIMEOUT_S)
        assert message_type not in (-1, DISCONNECT), f"the link to node {node} ended: {body!r}"
        if message_type in wanted:
            return node, message_type, body


async def _wait_for_height(port: int, chain_id: bytes, validators: dict[int, bytes], height: int) -> dict[str, Any]:
    client = await _connect(port, chain_id, validators)
    try:
        deadline = time.monotonic() + COMMIT_TIMEOUT_S
        while (status := await client.status())["height"] < height:
            assert time.monotonic() < deadline, f"node never reached height {height}: {status}"
            await asyncio.sleep(0.05)  # polling period of a condition with a deadline
        return status
    finally:
        client.close()


async def _view_change_as_validator_3(genesis: dict[str, Any], chain_id: bytes, ports: list[int]) -> None:
    """Section 13.9: the worked example of 13.8 with validator 3 played from the spec."""
    validators = {v["node_id"]: bytes.fromhex(v["public_key"]) for v in genesis["validators"]}
    params = genesis["params"]
    assert (params["votes"], params["leader_reputation"]) == (0, 1), "the test's genesis states the all-to-all vote path"
    n, me = len(validators), 3
    quorum, timeout_s = n - (n - 1) // 3, params["view_timeout_ms"] / 1000
    key = crypto.SigningKey(spec_seed_secret("spec", me))
    assert key.public_key == validators[me]
    leaders = SpecLeaders(spec_leader_schedule([(v["node_id"], v["stake"]) for v in genesis["validators"]]), n)
    owner = crypto.derive_key("spec-view-change", 0)
    listener = _listening_socket()
    announced = ("127.0.0.1", listener.getsockname()[1])
    observer = await _connect(ports[0], chain_id, validators)  # a client: submits, and hears of commits
    links: dict[int, SpecClient] = {}
    inbox: Inbox = asyncio.Queue()
    pumps: list[asyncio.Task[None]] = []
    submitted = iter(range(100, 1000))

    async def submit(note: bytes) -> bytes:
        proof, proof_id = make_proof(owner, chain_id, note, params["min_work_bits"])
        request_id = next(submitted)
        await observer.send(SUBMIT, struct.pack(">IB", request_id, KIND_PROOF) + proof)
        assert struct.unpack(">I32sB", await observer.read_until(SUBMIT_RESULT)) == (request_id, proof_id, ACCEPTED)
        return proof_id

    async def committed(proof_id: bytes) -> tuple[Block, int, int]:
        """The committed block holding ``proof_id``, its header's view and proposer; the spec's leaders learn it."""
        height, block_hash = await _wait_for_commit_of(observer, proof_id)
        block = decode_record(await observer.committed_record(height))
        _, header_view, _, proposer, *_ = BLOCK_HEADER.unpack(block.header)
        assert sha256(block.header) == block_hash
        message = commit_vote_message(chain_id, block.certificate_view, height, block_hash)
        assert len({voter for voter, _ in block.certificate}) >= quorum
        assert all(crypto.verify(validators[voter], message, signature) for voter, signature in block.certificate)
        leaders.committed(height, header_view, proposer)
        return block, header_view, proposer

    try:
        await _wait_for_peer_ids(observer, [1, 2])
        await observer.send(SUBSCRIBE, bytes([TOPIC_COMMITS]))
        for node, port in enumerate(ports):
            links[node] = await _connect(port, chain_id, validators, (me, key), announced)
        pumps = [asyncio.create_task(_pump(node, link, inbox, announced)) for node, link in links.items()]
        greeted: set[int] = set()
        while greeted != set(links):  # section 6: a node greets an established validator link with BLOCK_REQUEST
            greeted.add((await _next_frame(inbox, {BLOCK_REQUEST}))[0])

        # Heights 1 and 2: view 0, led by 1 and 2; validator 3 stays out of them.
        for height in (1, 2):
            assert leaders.leader(0, height) == height
            block, header_view, proposer = await committed(await submit(b"height %d" % height))
            assert (block.height, header_view, proposer, block.certificate_view) == (height, 0, height, 0)
        previous_hash = sha256(block.header)
        assert leaders.leader(0, 3) == me, "the example: validator 3 leads view 0 at height 3"
        for port in ports[1:]:
            await _wait_for_height(port, chain_id, validators, 2)  # every node now works on height 3

        # Height 3: validator 3 proposes nothing, and asks for view 1 at once (13.2). One request moves
        # nobody (f + 1 = 2), so the nodes wait for their timers (13.1).
        started = time.monotonic()
        proof_id = await submit(b"height 3")
        mine = signed_view_change(key, chain_id, 1, 3, me)
        for link in links.values():
            await link.send(VIEW_CHANGE, mine.body())
        asked: dict[int, float] = {}

        def check_view_change(node: int, body: bytes) -> None:
            change = SpecViewChange.decode(body)  # 13.4: from its link's validator, for a later view, signed
            assert (change.voter, change.height, change.new_view) == (node, 3, 1), change
            assert crypto.verify(validators[node], change.signed_bytes(chain_id), change.signature)
            assert (change.prepared_view, change.prepared_block, change.prepared_votes) == (0, b"", b""), "nothing was proposed"
            asked.setdefault(node, time.monotonic() - started)

        while (frame := await _next_frame(inbox, {VIEW_CHANGE, NEW_VIEW}))[1] == VIEW_CHANGE:
            check_view_change(frame[0], frame[2])
        node, _, body = frame
        new_view_after = time.monotonic() - started
        assert node == leaders.leader(1, 3) == 0, "13.6: the NEW_VIEW comes from the leader of (1, 3)"
        new_view, bodies, obligation, _ = spec_check_new_view(body, 3, chain_id, validators, quorum)
        assert new_view == 1 and obligation is None, "13.6: no VIEW_CHANGE carries a lock"
        assert mine.body() in bodies, "validator 3's VIEW_CHANGE is in the NEW_VIEW, byte for byte"
        assert new_view_after >= 0.95 * timeout_s and all(after >= 0.95 * timeout_s for after in asked.values()), (
            f"the nodes asked for view 1 before their timers could fire: {asked}, NEW_VIEW after {new_view_after:.3f} s"
        )
        assert len(bodies) >= quorum and new_view_after < timeout_s + 2.0
        voters = [SpecViewChange.decode(raw).voter for raw in bodies]

        # View 1 (13.7): a fresh block from 0; validator 3 PREPAREs it and, once prepared, COMMITs it.
        prepares: dict[int, bytes] = {}
        block_hash = b""
        while not block_hash or sum(voted == block_hash for voted in prepares.values()) < quorum:
            node, message_type, body = await _next_frame(inbox, {PRE_PREPARE, PREPARE, VIEW_CHANGE})
            if message_type == VIEW_CHANGE:  # one that came after the NEW_VIEW on its own link
                check_view_change(node, body)
            elif message_type == PRE_PREPARE:
                view, height = struct.unpack(">QQ", body[:16])
                fields, proof_ids, transfer_ids = decode_block(body[16:])
                block_height, block_view, prev_hash, proposer, _, items_root, _ = fields
                assert (node, view, height) == (0, 1, 3) and (block_height, block_view, proposer) == (3, 1, 0), "a fresh block of view 1"
                assert prev_hash == previous_hash and items_root == merkle_root(proof_ids + transfer_ids) and proof_id in proof_ids
                block_hash = sha256(body[16 : 16 + BLOCK_HEADER.size])
                signature = key.sign(vote_message("prepare", chain_id, 1, 3, block_hash))
                prepares[me] = block_hash
                for link in links.values():
                    await link.send(PREPARE, VOTE.pack(1, 3, block_hash, me, signature))
            else:
                view, height, voted, voter, signature = VOTE.unpack(body)
                if (view, height) == (1, 3):
                    assert voter == node and crypto.verify(validators[voter], vote_message("prepare", chain_id, 1, 3, voted), signature)
                    prepares[voter] = voted
        signature = key.sign(vote_message("commit", chain_id, 1, 3, block_hash))
        for link in links.values():
            await link.send(COMMIT, VOTE.pack(1, 3, block_hash, me, signature))
        block, header_view, proposer = await committed(proof_id)
        assert (block.height, sha256(block.header), block.certificate_view) == (3, block_hash, 1), "block 3 commits in view 1"
        assert leaders.excluded == {me}, "3 missed its turn at height 3 and is left out (docs/consensus.md)"
        assert all(after >= 0.95 * timeout_s for after in asked.values()) and set(asked) >= set(voters) - {me}

        # Heights 4-6 in view 1 without a timeout, led by 2, 0, 1; plain rotation would have 3 lead (1, 6).
        assert (1 + 6) % n == me
        for height, leader in ((4, 2), (5, 0), (6, 1)):
            assert leaders.leader(1, height) == leader
            block, header_view, proposer = await committed(await submit(b"height %d" % height))
            assert (block.height, header_view, proposer, block.certificate_view) == (height, 1, leader, 1)
        for port in ports:
            status = await _wait_for_height(port, chain_id, validators, 6)
            assert (status["view"], status["leader"]) == (1, leaders.leader(1, 7)), "STATUS names the spec's leader"
        timings = {node: round(after, 3) for node, after in sorted(asked.items())}
        print(f"asked for view 1 after (s): {timings}; NEW_VIEW(1, 3) from 0 after {new_view_after:.3f} s "
              f"with the VIEW_CHANGEs of {voters}; heights 3-6 committed in view 1")  # fmt: skip
    finally:
        for task in pumps:
            task.cancel()
        for client in [observer, *links.values()]:
            client.close()
        listener.close()
