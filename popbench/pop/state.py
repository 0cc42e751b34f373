"""Account state: balances, stakes, rewards earned and account nonces, with a Merkle root.

Accounts are keyed by 20-byte address. The state root is the Merkle root over every account sorted by
address, each leaf ``address || balance || stake || rewards || nonce`` (u64 each, big-endian). Snapshots
are exactly those leaves, so a snapshot reproduces the root it claims or is refused.

An account exists once execution writes to it, and only then: a transfer that execution skips (docs/
consensus.md, "Execution and replay") creates no account. The state records which accounts execution
wrote since it was copied, so what the node persists is exactly what execution changed.

The root is kept incrementally (docs/consensus.md, "The state root, block by block"): the sorted
addresses and the Merkle tree's levels live in an :class:`AccountTree` that a copy shares with the state
it was copied from, and the first of them to compute a root after writing takes it over and rehashes
only the paths of the accounts written; another that still needs it later builds its own from scratch.
"""

from __future__ import annotations

import itertools
import struct
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from popbench.errors import InvalidProof, SyncError
from popbench.merkle import MerkleTree
from popbench.model.hashing import address_of
from popbench.model.proof import Proof
from popbench.model.transfer import Transfer, TransferKind
from popbench.wire.enums import RejectReason

ACCOUNT = struct.Struct(">20sQQQQ")
Row = tuple[bytes, int, int, int, int]  # address, balance, stake, rewards, nonce
Account = tuple[int, int, int, int]  # balance, stake, rewards, nonce
NO_ACCOUNT: Account = (0, 0, 0, 0)
_VERSIONS = itertools.count(1)


@dataclass(frozen=True)
class RewardRules:
    reward_per_proof: int
    block_reward: int
    validator_reward: int


class AccountTree:
    """The sorted addresses and the Merkle tree over their records, as of one ``version``.

    A state may use the tree only while its version is the one that state last saw: every change gives
    the tree a new version, so a state whose accounts it no longer reflects can tell.
    """

    __slots__ = ("addresses", "merkle", "version")

    def __init__(self, accounts: Mapping[bytes, Account]) -> None:
        self.addresses = sorted(accounts)
        self.merkle = MerkleTree([ACCOUNT.pack(address, *accounts[address]) for address in self.addresses])
        self.version = next(_VERSIONS)

    def update(self, accounts: Mapping[bytes, Account], written: Iterable[bytes]) -> None:
        """Bring the tree up to ``accounts`` after the ``written`` addresses changed or came into being."""
        addresses = self.addresses
        replaced: dict[int, bytes] = {}
        inserted: list[tuple[int, bytes]] = []
        for address in written:
            index = bisect_left(addresses, address)
            if index < len(addresses) and addresses[index] == address:
                replaced[index] = ACCOUNT.pack(address, *accounts[address])
            else:
                inserted.append((index, address))
        inserted.sort()  # by position, then address: new accounts between the same two keep address order
        self.merkle.apply(replaced, [(index, ACCOUNT.pack(address, *accounts[address])) for index, address in inserted])
        if inserted:  # two sorted runs: Timsort merges them in one linear pass
            self.addresses = sorted([*addresses, *(address for _, address in inserted)])
        self.version = next(_VERSIONS)


class State:
    """Mutable account table; ``copy`` before executing a block that may be refused."""

    __slots__ = ("_accounts", "_dirty", "_root", "_tree", "_tree_version", "_written")

    def __init__(self, accounts: dict[bytes, Account]) -> None:
        self._accounts = accounts  # address -> (balance, stake, rewards, nonce); a copy copies only the dict
        self._root: bytes | None = None
        self._written: set[bytes] = set()  # accounts execution wrote since this state was made or copied
        self._tree: AccountTree | None = None  # built by the first root(), then shared with copies
        self._tree_version = 0  # the tree's version when it last reflected these accounts (but _dirty)
        self._dirty: set[bytes] = set()  # accounts written since then

    @classmethod
    def from_genesis(cls, balances: Mapping[bytes, int], stakes: Mapping[bytes, int]) -> State:
        accounts: dict[bytes, Account] = {}
        for address in {*balances, *stakes}:
            accounts[address] = (balances.get(address, 0), stakes.get(address, 0), 0, 0)
        return cls(accounts)

    @classmethod
    def from_rows(cls, rows: Iterable[Row]) -> State:
        return cls({address: (balance, stake, rewards, nonce) for address, balance, stake, rewards, nonce in rows})

    def copy(self) -> State:
        """An independent state with the same accounts; it shares the root's tree until one of them writes."""
        copied = State(self._accounts.copy())
        copied._root = self._root
        copied._tree, copied._tree_version, copied._dirty = self._tree, self._tree_version, set(self._dirty)
        return copied

    def row(self, address: bytes) -> Row:
        balance, stake, rewards, nonce = self._accounts.get(address, NO_ACCOUNT)
        return address, balance, stake, rewards, nonce

    def rows(self) -> list[Row]:
        return [self.row(address) for address in sorted(self._accounts)]

    def written_rows(self) -> list[Row]:
        """The accounts execution wrote since the copy this state began as: the rows a commit persists."""
        return [self.row(address) for address in sorted(self._written)]

    def has_account(self, address: bytes) -> bool:
        return address in self._accounts

    def __len__(self) -> int:
        return len(self._accounts)

    # -- rules -----------------------------------------------------------------------------------
    def check_transfer(self, transfer: Transfer) -> None:
        account = self._accounts.get(address_of(transfer.sender))
        if account is None:
            raise InvalidProof(RejectReason.UNKNOWN_ACCOUNT, "sender has no account")
        if transfer.account_nonce < account[3]:
            raise InvalidProof(RejectReason.BAD_NONCE, f"nonce {transfer.account_nonce} already used (next {account[3]})")
        if account[0] < transfer.amount + transfer.fee:
            raise InvalidProof(RejectReason.INSUFFICIENT_BALANCE, "balance below amount + fee")

    def apply_block(self, proofs: Sequence[Proof], transfers: Sequence[Transfer], proposer: bytes,
                    validators: Sequence[bytes], rules: RewardRules) -> None:  # fmt: skip
        """Apply transfers in order (one that fails now is skipped), then credit the rewards."""
        self._root = None
        for transfer in transfers:
            self._apply_transfer(transfer, proposer)
        for proof in proofs:
            self._credit(address_of(proof.owner), rules.reward_per_proof)
        self._credit(proposer, rules.block_reward)
        for validator in validators:
            self._credit(validator, rules.validator_reward)

    def _apply_transfer(self, transfer: Transfer, proposer: bytes) -> None:
        """Apply one transfer, or skip it whole: no account is created or changed by a skipped one."""
        sender_address = address_of(transfer.sender)
        sender = self._accounts.get(sender_address)
        if sender is None or sender[3] != transfer.account_nonce or sender[0] < transfer.amount + transfer.fee:
            return
        balance, stake, rewards, nonce = sender
        balance -= transfer.amount + transfer.fee
        if transfer.kind == TransferKind.BOND:
            self._write(sender_address, (balance, stake + transfer.amount, rewards, nonce + 1))
        else:
            self._write(sender_address, (balance, stake, rewards, nonce + 1))
            self._add(transfer.recipient, transfer.amount, 0)  # read after the sender's write: it may be the sender
        self._add(proposer, transfer.fee, 0)

    def _credit(self, address: bytes, amount: int) -> None:
        self._add(address, amount, amount)

    def _add(self, address: bytes, balance: int, rewards: int) -> None:
        """Add to an account's balance and rewards, creating it if new."""
        old = self._accounts.get(address, NO_ACCOUNT)
        self._write(address, (old[0] + balance, old[1], old[2] + rewards, old[3]))

    def _write(self, address: bytes, account: Account) -> None:
        """Every write of execution goes through here."""
        self._written.add(address)
        self._dirty.add(address)
        self._accounts[address] = account

    # -- root and snapshots --------------------------------------------------------------------------
    def root(self) -> bytes:
        """The state root: rehashing only the accounts written since the last root when the tree is ours."""
        if self._root is None:
            tree = self._tree
            if tree is None or tree.version != self._tree_version:
                tree = self._tree = AccountTree(self._accounts)  # none yet, or a copy took it over
            elif self._dirty:
                tree.update(self._accounts, self._dirty)
            self._tree_version, self._dirty = tree.version, set()
            self._root = tree.merkle.root()
        return self._root

    def encode_snapshot(self) -> bytes:
        return b"".join(ACCOUNT.pack(*row) for row in self.rows())

    @classmethod
    def decode_snapshot(cls, data: bytes) -> State:
        if len(data) % ACCOUNT.size:
            raise SyncError(f"snapshot of {len(data)} bytes is not a whole number of accounts")
        rows = list(ACCOUNT.iter_unpack(data))
        addresses = [row[0] for row in rows]
        if addresses != sorted(set(addresses)):
            raise SyncError("snapshot accounts are not sorted and unique")
        return cls.from_rows(rows)
