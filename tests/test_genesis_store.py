"""The genesis file (identity, validator set, leader schedule, keys file) and the node's SQLite store."""

from __future__ import annotations

import dataclasses
import json
import stat
from collections import Counter
from pathlib import Path

import pytest

from popbench import crypto
from popbench.errors import ConfigError, StorageError
from popbench.genesis import (
    MAX_SCHEDULE_SLOTS,
    ChainParams,
    Genesis,
    ValidatorInfo,
    genesis_from_dict,
    load_genesis,
    load_keys,
    make_genesis,
    write_genesis,
    write_keys,
)
from popbench.store import Store

Row = tuple[bytes, int, int, int, int]


def genesis_with_stakes(stakes: list[int]) -> Genesis:
    validators = tuple(ValidatorInfo(i, crypto.derive_key("test-genesis", i).public_key, s) for i, s in enumerate(stakes))
    return Genesis("stakes", validators)


def account(index: int, balance: int = 100) -> Row:
    return (bytes([index]) * 20, balance, 0, 0, 0)


def save_block(store: Store, height: int, items: list[bytes] | None = None, accounts: list[Row] | None = None) -> None:
    store.save_committed(height, bytes([height]) * 32, height % 3, b"record-%d" % height, items or [],
                         accounts or [], bytes([height + 100]) * 32)  # fmt: skip


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    with Store(tmp_path / "node.sqlite") as opened:
        yield opened


# -- genesis: making, writing, loading ------------------------------------------------------------------
def test_make_genesis_is_reproducible_from_its_seed() -> None:
    first, keys = make_genesis(4, seed="s")
    second, _ = make_genesis(4, seed="s")
    assert first.chain_id == second.chain_id
    assert [v.public_key for v in first.validators] == [k.public_key for k in keys]
    assert keys[2].secret == crypto.derive_key("s", 2).secret
    assert make_genesis(4, seed="other")[0].chain_id != first.chain_id


def test_make_genesis_funds_and_stakes_every_validator() -> None:
    genesis, _ = make_genesis(3, stake=5000, balance=77)
    assert [v.node_id for v in genesis.validators] == [0, 1, 2]
    assert all(v.stake == 5000 and genesis.balances[v.address] == 77 for v in genesis.validators)


def test_a_genesis_round_trips_through_its_file_with_the_same_chain_id(tmp_path: Path) -> None:
    params = dataclasses.replace(ChainParams(), batch_size=64, min_work_bits=12)
    genesis, _ = make_genesis(5, params=params, chain_name="round-trip")
    write_genesis(genesis, tmp_path / "genesis.json")
    loaded = load_genesis(tmp_path / "genesis.json")
    assert loaded == genesis
    assert loaded.chain_id == genesis.chain_id


def test_missing_params_take_their_defaults() -> None:
    genesis, _ = make_genesis(1)
    data = genesis.to_json_dict()
    del data["params"]
    assert genesis_from_dict(data, "test").params == ChainParams()


def test_the_chain_id_is_the_sha256_of_the_canonical_json() -> None:
    import hashlib

    genesis, _ = make_genesis(2)
    canonical = json.dumps(genesis.to_json_dict(), sort_keys=True, separators=(",", ":")).encode()
    assert genesis.chain_id == hashlib.sha256(canonical).digest()


@pytest.mark.parametrize("change", [{"chain_name": "x"}, {"params": {"min_work_bits": 9}}, {"balance": 1}, {"stake": 20_000}])
def test_any_change_to_the_genesis_changes_the_chain_id(change: dict) -> None:  # type: ignore[type-arg]
    change = dict(change)
    base, _ = make_genesis(2)
    params = dataclasses.replace(ChainParams(), **change.pop("params", {}))
    assert make_genesis(2, params=params, **change)[0].chain_id != base.chain_id


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda d: d.update(extra=1), "extra"),
        (lambda d: d["params"].update(block_size=1), "params.block_size"),
        (lambda d: d["params"].update(batch_size=0), "params.batch_size"),
        (lambda d: d["params"].update(view_timeout_ms=-1), "params.view_timeout_ms"),
        (lambda d: d["params"].update(min_work_bits=65), "params.min_work_bits"),
        (lambda d: d["validators"][0].update(public_key="abcd"), "validators[0].public_key"),
        (lambda d: d["validators"][1].update(stake=True), "validators[1].stake"),
        (lambda d: d["validators"][1].update(stake=999), "validators"),
        (lambda d: d["validators"][1].update(node_id=0), "validators"),
        (lambda d: d.update(validators=[]), "validators"),
        (lambda d: d.update(validators={}), "validators"),
        (lambda d: d.update(balances=[]), "balances"),
        (lambda d: d["balances"].update({"00": 1}), "balances.00"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_a_bad_genesis_is_refused_naming_the_key_and_file(edit, key: str) -> None:  # type: ignore[no-untyped-def]
    data = make_genesis(2)[0].to_json_dict()
    edit(data)
    with pytest.raises(ConfigError) as caught:
        genesis_from_dict(data, "bad.json")
    assert "bad.json" in str(caught.value) and key in str(caught.value)


def test_an_unreadable_genesis_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "genesis.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read JSON"):
        load_genesis(tmp_path / "genesis.json")
    with pytest.raises(ConfigError, match="cannot read JSON"):
        load_genesis(tmp_path / "missing.json")


# -- genesis: validator set -----------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "f", "quorum"), [(1, 0, 1), (2, 0, 2), (3, 0, 3), (4, 1, 3), (5, 1, 4), (6, 1, 5),
                                               (7, 2, 5), (10, 3, 7), (100, 33, 67)])  # fmt: skip
def test_f_and_quorum_follow_the_bft_bound(n: int, f: int, quorum: int) -> None:
    genesis, _ = make_genesis(n)
    assert (genesis.f, genesis.quorum) == (f, quorum)


@pytest.mark.parametrize("n", range(1, 20))
def test_any_two_quorums_share_at_least_f_plus_one_validators(n: int) -> None:
    genesis, _ = make_genesis(n)
    assert 2 * genesis.quorum - n >= genesis.f + 1  # so at least one honest validator is in both
    assert genesis.quorum <= n - genesis.f  # and the honest validators alone can form one


def test_equal_stakes_give_plain_round_robin() -> None:
    genesis, _ = make_genesis(4)
    assert genesis.leader_schedule == (0, 1, 2, 3)
    assert [genesis.leader_for_view(view) for view in range(6)] == [0, 1, 2, 3, 0, 1]


@pytest.mark.parametrize("stakes", [[1000, 2000, 3000], [5000, 1000, 1000, 3000], [1000, 1000, 8000]])
def test_the_leader_schedule_gives_each_validator_slots_proportional_to_stake(stakes: list[int]) -> None:
    schedule = genesis_with_stakes(stakes).leader_schedule
    unit = min(stakes)
    assert Counter(schedule) == {i: stake // unit for i, stake in enumerate(stakes)}


def test_the_leader_schedule_interleaves_rather_than_groups_a_large_stake() -> None:
    schedule = genesis_with_stakes([3000, 1000, 1000, 1000]).leader_schedule
    assert len(schedule) == 6 and schedule.count(0) == 3
    assert all(schedule[i] != 0 or schedule[i + 1] != 0 for i in range(len(schedule) - 1))


def test_large_coprime_stakes_are_scaled_into_the_slot_limit() -> None:
    stakes = [24643, 27274, 8496, 20370]  # rounding these once looped forever at 10,001 slots
    counts = Counter(genesis_with_stakes(stakes).leader_schedule)
    assert sum(counts.values()) <= MAX_SCHEDULE_SLOTS
    total = sum(stakes)
    for index, stake in enumerate(stakes):
        assert abs(counts[index] / MAX_SCHEDULE_SLOTS - stake / total) < 0.001


def test_a_tiny_stake_beside_huge_ones_still_gets_a_slot() -> None:
    counts = Counter(genesis_with_stakes([1000, 10**12 + 1, 10**12 + 3]).leader_schedule)
    assert counts[0] >= 1 and sum(counts.values()) <= MAX_SCHEDULE_SLOTS


# -- keys file --------------------------------------------------------------------------------------------
def test_the_keys_file_round_trips_and_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    _, keys = make_genesis(3)
    path = tmp_path / "genesis.keys.json"
    write_keys(keys, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_keys(path)
    assert {i: k.secret for i, k in loaded.items()} == {i: k.secret for i, k in enumerate(keys)}


def test_rewriting_an_open_keys_file_makes_it_private(tmp_path: Path) -> None:
    path = tmp_path / "genesis.keys.json"
    path.write_text("{}")
    path.chmod(0o644)
    write_keys(make_genesis(1)[1], path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("content", ["[]", '{"a": "00"}', '{"0": "zz"}', '{"0": "0011"}'], ids=["list", "id", "hex", "size"])
def test_a_bad_keys_file_is_a_config_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(content)
    with pytest.raises(ConfigError):
        load_keys(path)


# -- store ----------------------------------------------------------------------------------------------
def test_an_empty_store_has_no_head(store: Store) -> None:
    assert store.head() is None and store.committed_range(0, 10) == [] and store.seen_ids() == set()


def test_saved_blocks_give_the_head_and_ranges_in_height_order(store: Store) -> None:
    for height in (1, 2, 3, 4):
        save_block(store, height)
    assert store.head() == (4, bytes([4]) * 32)
    assert store.committed_range(2, 2) == [b"record-2", b"record-3"]
    assert store.committed_range(3, 100) == [b"record-3", b"record-4"]
    assert store.committed_at(1) == b"record-1" and store.committed_at(9) is None
    assert store.state_root_at(2) == bytes([102]) * 32
    assert store.block_hashes() == [(h, bytes([h]) * 32) for h in (1, 2, 3, 4)]


def test_saved_items_are_seen_and_accounts_are_upserted(store: Store) -> None:
    save_block(store, 1, [b"a" * 32, b"b" * 32], [account(1), account(2)])
    save_block(store, 2, [b"c" * 32], [account(2, balance=5)])
    assert store.seen_ids() == {b"a" * 32, b"b" * 32, b"c" * 32}
    assert store.has_item(b"c" * 32) and not store.has_item(b"d" * 32)
    assert sorted(store.load_accounts()) == [account(1), account(2, balance=5)]


def test_a_second_block_at_a_height_is_refused_and_writes_nothing(store: Store) -> None:
    save_block(store, 1, [b"a" * 32], [account(1)])
    with pytest.raises(StorageError):
        save_block(store, 1, [b"z" * 32], [account(9)])
    assert store.seen_ids() == {b"a" * 32}
    assert store.load_accounts() == [account(1)]


def test_replace_state_installs_a_snapshot_in_place_of_everything(store: Store) -> None:
    for height in (1, 2):
        save_block(store, height, [bytes([height]) * 32], [account(height)])
    store.replace_state(50, b"h" * 32, b"certified", [account(7), account(8)], b"r" * 32)
    assert store.head() == (50, b"h" * 32)
    assert store.committed_range(0, 100) == [b"certified"]
    assert store.state_root_at(50) == b"r" * 32
    assert sorted(store.load_accounts()) == [account(7), account(8)]
    assert store.seen_ids() == set()


def test_everything_committed_survives_closing_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    with Store(path) as first:
        save_block(first, 1, [b"a" * 32], [account(1)])
        save_block(first, 2, [b"b" * 32], [account(2)])
        first.save_pow_block(b"p" * 32, bytes(32), 1, 2**200 + 5, b"encoded")
    with Store(path) as reopened:
        assert reopened.head() == (2, bytes([2]) * 32)
        assert reopened.seen_ids() == {b"a" * 32, b"b" * 32}
        assert sorted(reopened.load_accounts()) == [account(1), account(2)]
        assert reopened.load_pow_blocks() == [(b"p" * 32, bytes(32), 1, 2**200 + 5, b"encoded")]


def test_a_store_that_cannot_be_opened_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot open"):
        Store(tmp_path / "missing-dir" / "node.sqlite")
