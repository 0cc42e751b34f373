"""Merkle roots and inclusion proofs; the account state: rules, rewards, root and snapshots."""

from __future__ import annotations

import hashlib

import pytest

from popbench import crypto
from popbench.errors import InvalidProof, SyncError
from popbench.merkle import EMPTY_ROOT, inclusion_proof, merkle_root, verify_inclusion
from popbench.model.hashing import address_of
from popbench.model.proof import Proof
from popbench.model.transfer import Transfer, TransferKind
from popbench.pop.state import ACCOUNT, RewardRules, State
from popbench.wire import RejectReason

CHAIN_ID = bytes(range(32))
ALICE = crypto.derive_key("test-state", 0)
BOB = crypto.derive_key("test-state", 1)
STRANGER = crypto.derive_key("test-state", 2)
VALIDATORS = [address_of(crypto.derive_key("test-state-validators", i).public_key) for i in range(4)]
PROPOSER = VALIDATORS[1]
RULES = RewardRules(reward_per_proof=3, block_reward=10, validator_reward=1)
START_BALANCE = 1000
LEAF_COUNTS = list(range(1, 18))


def leaves(count: int) -> list[bytes]:
    return [b"leaf-%d" % i for i in range(count)]


def genesis_state() -> State:
    balances = {address_of(ALICE.public_key): START_BALANCE, address_of(BOB.public_key): START_BALANCE}
    return State.from_genesis(balances, dict.fromkeys(VALIDATORS, 5000))


def pay(key: crypto.SigningKey, recipient: bytes, amount: int, fee: int = 1, nonce: int = 0,
        kind: TransferKind = TransferKind.PAY) -> Transfer:  # fmt: skip
    return Transfer.create(key, CHAIN_ID, recipient, amount, fee, nonce, kind)


def balance(state: State, key_or_address: crypto.SigningKey | bytes) -> int:
    address = key_or_address if isinstance(key_or_address, bytes) else address_of(key_or_address.public_key)
    return state.row(address)[1]


def refusal(state: State, transfer: Transfer) -> RejectReason:
    with pytest.raises(InvalidProof) as caught:
        state.check_transfer(transfer)
    return caught.value.reason  # type: ignore[no-any-return]


# -- Merkle -------------------------------------------------------------------------------------------
def test_the_root_of_no_leaves_is_the_hash_of_nothing() -> None:
    assert merkle_root([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()


def test_a_single_leaf_root_is_its_domain_separated_hash() -> None:
    assert merkle_root([b"only"]) == hashlib.sha256(b"\x00only").digest()


def test_two_leaves_hash_as_an_inner_node_of_their_leaf_hashes() -> None:
    left, right = hashlib.sha256(b"\x00a").digest(), hashlib.sha256(b"\x00b").digest()
    assert merkle_root([b"a", b"b"]) == hashlib.sha256(b"\x01" + left + right).digest()


def test_a_leaf_cannot_pass_for_an_inner_node() -> None:
    inner = hashlib.sha256(b"\x00a").digest() + hashlib.sha256(b"\x00b").digest()
    assert merkle_root([inner]) != merkle_root([b"a", b"b"])


@pytest.mark.parametrize("count", [1, 3, 5, 7])
def test_an_odd_list_and_the_list_with_its_last_leaf_repeated_have_different_roots(count: int) -> None:
    items = leaves(count)
    assert merkle_root(items) != merkle_root([*items, items[-1]])


def test_every_leaf_change_and_reordering_changes_the_root() -> None:
    items = leaves(9)
    roots = {merkle_root(items), merkle_root(items[::-1])}
    for index in range(len(items)):
        roots.add(merkle_root([*items[:index], b"changed", *items[index + 1 :]]))
    assert len(roots) == 2 + len(items)


@pytest.mark.parametrize("count", LEAF_COUNTS)
def test_every_inclusion_proof_verifies_against_the_root(count: int) -> None:
    items = leaves(count)
    root = merkle_root(items)
    for index, leaf in enumerate(items):
        assert verify_inclusion(leaf, index, count, inclusion_proof(items, index), root)


@pytest.mark.parametrize("count", [2, 5, 8, 13])
def test_an_inclusion_proof_fails_for_another_leaf_index_or_root(count: int) -> None:
    items = leaves(count)
    root = merkle_root(items)
    for index, leaf in enumerate(items):
        proof = inclusion_proof(items, index)
        assert not verify_inclusion(b"forged", index, count, proof, root)
        assert not verify_inclusion(leaf, (index + 1) % count, count, proof, root)
        assert not verify_inclusion(leaf, index, count, proof, merkle_root(items[:-1]))


@pytest.mark.parametrize("count", [3, 5, 7, 13])
def test_a_promoted_last_leaf_proves_only_at_its_own_count(count: int) -> None:
    # The count is the verifier's to know; it fixes which levels promote a node instead of pairing it.
    items = leaves(count)
    proof = inclusion_proof(items, count - 1)
    assert verify_inclusion(items[-1], count - 1, count, proof, merkle_root(items))
    assert not verify_inclusion(items[-1], count - 1, count + 1, proof, merkle_root(items))


@pytest.mark.parametrize("count", [3, 6, 9])
def test_an_inclusion_proof_with_a_missing_or_extra_hash_fails(count: int) -> None:
    items = leaves(count)
    root = merkle_root(items)
    proof = inclusion_proof(items, 1)
    assert not verify_inclusion(items[1], 1, count, proof[:-1], root)
    assert not verify_inclusion(items[1], 1, count, [*proof, bytes(32)], root)


def test_an_out_of_range_index_has_no_proof_and_never_verifies() -> None:
    items = leaves(4)
    with pytest.raises(IndexError):
        inclusion_proof(items, 4)
    with pytest.raises(IndexError):
        inclusion_proof([], 0)
    assert not verify_inclusion(items[0], 4, 4, [], merkle_root(items))
    assert not verify_inclusion(items[0], -1, 4, [], merkle_root(items))


# -- State: rules -------------------------------------------------------------------------------------
def test_genesis_state_holds_balances_and_stakes_sorted_by_address() -> None:
    state = genesis_state()
    rows = state.rows()
    assert len(state) == 6 and [row[0] for row in rows] == sorted(row[0] for row in rows)
    assert balance(state, ALICE) == START_BALANCE
    assert state.row(VALIDATORS[0]) == (VALIDATORS[0], 0, 5000, 0, 0)


def test_a_transfer_from_an_unknown_account_is_refused() -> None:
    assert refusal(genesis_state(), pay(STRANGER, bytes(20), 1)) == RejectReason.UNKNOWN_ACCOUNT


def test_a_transfer_over_the_balance_including_the_fee_is_refused() -> None:
    state = genesis_state()
    state.check_transfer(pay(ALICE, bytes(20), START_BALANCE - 1, fee=1))
    assert refusal(state, pay(ALICE, bytes(20), START_BALANCE, fee=1)) == RejectReason.INSUFFICIENT_BALANCE


def test_a_transfer_with_a_used_nonce_is_refused() -> None:
    state = genesis_state()
    state.apply_block([], [pay(ALICE, bytes(20), 10)], PROPOSER, VALIDATORS, RULES)
    assert refusal(state, pay(ALICE, bytes(20), 10, nonce=0)) == RejectReason.BAD_NONCE
    state.check_transfer(pay(ALICE, bytes(20), 10, nonce=1))


def test_a_payment_moves_the_amount_and_pays_the_fee_to_the_proposer() -> None:
    state = genesis_state()
    bob = address_of(BOB.public_key)
    state.apply_block([], [pay(ALICE, bob, 100, fee=5)], PROPOSER, [], RewardRules(0, 0, 0))
    assert balance(state, ALICE) == START_BALANCE - 105
    assert balance(state, BOB) == START_BALANCE + 100
    assert balance(state, PROPOSER) == 5
    assert state.row(address_of(ALICE.public_key))[4] == 1  # the account nonce advanced


def test_a_bond_moves_balance_into_the_senders_stake() -> None:
    state = genesis_state()
    alice = address_of(ALICE.public_key)
    state.apply_block([], [pay(ALICE, bytes(20), 300, fee=0, kind=TransferKind.BOND)], PROPOSER, [], RewardRules(0, 0, 0))
    assert state.row(alice)[1:3] == (START_BALANCE - 300, 300)
    assert state.row(bytes(20))[1] == 0


def test_a_transfer_that_fails_when_applied_is_skipped_and_the_rest_applied() -> None:
    state = genesis_state()
    bob = address_of(BOB.public_key)
    transfers = [pay(ALICE, bob, 10, nonce=0), pay(ALICE, bob, 10, nonce=0),  # replayed nonce: skipped
                 pay(ALICE, bob, START_BALANCE, nonce=1), pay(ALICE, bob, 20, nonce=1)]  # too much: skipped  # fmt: skip
    state.apply_block([], transfers, PROPOSER, [], RewardRules(0, 0, 0))
    assert balance(state, BOB) == START_BALANCE + 30
    assert state.row(address_of(ALICE.public_key))[4] == 2


def test_a_block_credits_proof_owners_the_proposer_and_every_validator() -> None:
    state = genesis_state()
    owner = crypto.derive_key("test-state-owner", 0)
    proofs = [Proof.create(owner, CHAIN_ID, b"%d" % i, 0, 0, 0) for i in range(4)]
    state.apply_block(proofs, [], PROPOSER, VALIDATORS, RULES)
    assert state.row(address_of(owner.public_key))[1:4] == (12, 0, 12)
    assert state.row(PROPOSER)[1:4] == (11, 5000, 11)
    assert state.row(VALIDATORS[0])[1:4] == (1, 5000, 1)


# -- State: root and snapshots -------------------------------------------------------------------------
def test_the_root_is_the_merkle_root_of_the_sorted_account_leaves() -> None:
    state = genesis_state()
    assert state.root() == merkle_root([ACCOUNT.pack(*row) for row in state.rows()])


def test_applying_a_block_changes_the_root_and_leaves_a_copy_untouched() -> None:
    state = genesis_state()
    before = state.root()
    copied = state.copy()
    copied.apply_block([], [pay(ALICE, bytes(20), 1)], PROPOSER, VALIDATORS, RULES)
    assert copied.root() != before
    assert state.root() == before and state.rows() == genesis_state().rows()


def test_equal_accounts_built_in_any_order_have_the_same_root() -> None:
    rows = genesis_state().rows()
    assert State.from_rows(rows[::-1]).root() == State.from_rows(rows).root()


def test_a_snapshot_round_trips_to_the_same_rows_and_root() -> None:
    state = genesis_state()
    state.apply_block([], [pay(ALICE, address_of(BOB.public_key), 7)], PROPOSER, VALIDATORS, RULES)
    restored = State.decode_snapshot(state.encode_snapshot())
    assert restored.rows() == state.rows() and restored.root() == state.root()


def test_a_tampered_snapshot_no_longer_matches_the_root() -> None:
    state = genesis_state()
    data = bytearray(state.encode_snapshot())
    data[ACCOUNT.size + 20 + 7] ^= 1  # lowest byte of the second account's balance
    assert State.decode_snapshot(bytes(data)).root() != state.root()


def test_a_snapshot_that_is_not_whole_accounts_is_refused() -> None:
    with pytest.raises(SyncError, match="whole number"):
        State.decode_snapshot(genesis_state().encode_snapshot()[:-1])


@pytest.mark.parametrize("reorder", [lambda rows: rows[::-1], lambda rows: [rows[0], *rows]], ids=["unsorted", "duplicate"])
def test_a_snapshot_with_unsorted_or_repeated_accounts_is_refused(reorder) -> None:  # type: ignore[no-untyped-def]
    rows = reorder(genesis_state().rows())
    with pytest.raises(SyncError, match="sorted and unique"):
        State.decode_snapshot(b"".join(ACCOUNT.pack(*row) for row in rows))


def test_the_empty_snapshot_is_the_empty_state() -> None:
    assert State.decode_snapshot(b"").root() == EMPTY_ROOT
