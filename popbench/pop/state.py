"""Account state: balances, stakes, rewards earned and account nonces, with a Merkle root.

Accounts are keyed by 20-byte address. The state root is the Merkle root over every account sorted by
address, each leaf ``address || balance || stake || rewards || nonce`` (u64 each, big-endian). Snapshots
are exactly those leaves, so a snapshot reproduces the root it claims or is refused.

An account exists once execution writes to it, and only then: a transfer that execution skips (docs/
consensus.md, "Execution and replay") creates no account. The state records which accounts execution
wrote since it was copied, so what the node persists is exactly what execution changed.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from popbench.errors import InvalidProof, SyncError
from popbench.merkle import merkle_root
from popbench.model.hashing import address_of
from popbench.model.proof import Proof
from popbench.model.transfer import Transfer, TransferKind
from popbench.wire.enums import RejectReason

ACCOUNT = struct.Struct(">20sQQQQ")
Row = tuple[bytes, int, int, int, int]  # address, balance, stake, rewards, nonce


@dataclass(frozen=True)
class RewardRules:
    reward_per_proof: int
    block_reward: int
    validator_reward: int


class State:
    """Mutable account table; ``copy`` before executing a block that may be refused."""

    __slots__ = ("_accounts", "_root", "_written")

    def __init__(self, accounts: dict[bytes, list[int]]) -> None:
        self._accounts = accounts  # address -> [balance, stake, rewards, nonce]
        self._root: bytes | None = None
        self._written: set[bytes] = set()  # accounts execution wrote since this state was made or copied

    @classmethod
    def from_genesis(cls, balances: Mapping[bytes, int], stakes: Mapping[bytes, int]) -> State:
        accounts: dict[bytes, list[int]] = {}
        for address in {*balances, *stakes}:
            accounts[address] = [balances.get(address, 0), stakes.get(address, 0), 0, 0]
        return cls(accounts)

    @classmethod
    def from_rows(cls, rows: Iterable[Row]) -> State:
        return cls({address: [balance, stake, rewards, nonce] for address, balance, stake, rewards, nonce in rows})

    def copy(self) -> State:
        copied = State({address: list(values) for address, values in self._accounts.items()})
        copied._root = self._root
        return copied

    def row(self, address: bytes) -> Row:
        balance, stake, rewards, nonce = self._accounts.get(address, (0, 0, 0, 0))
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
        sender = self._account(sender_address)  # marks it written
        sender[0] -= transfer.amount + transfer.fee
        sender[3] += 1
        if transfer.kind == TransferKind.BOND:
            sender[1] += transfer.amount
        else:
            self._account(transfer.recipient)[0] += transfer.amount
        self._account(proposer)[0] += transfer.fee

    def _credit(self, address: bytes, amount: int) -> None:
        account = self._account(address)
        account[0] += amount
        account[2] += amount

    def _account(self, address: bytes) -> list[int]:
        """The account to write to, created if new; every write of execution goes through here."""
        self._written.add(address)
        account = self._accounts.get(address)
        if account is None:
            account = self._accounts[address] = [0, 0, 0, 0]
        return account

    # -- root and snapshots --------------------------------------------------------------------------
    def root(self) -> bytes:
        if self._root is None:
            self._root = merkle_root([ACCOUNT.pack(*row) for row in self.rows()])
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
