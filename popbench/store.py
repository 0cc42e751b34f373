"""One SQLite database per node: committed blocks with certificates, account state, seen item ids.

WAL mode with ``synchronous=NORMAL``: a commit survives the node process being killed (kill -9), which
is what the harness and the tests do; it is not promised to survive the operating system crashing.
Every committed block is written with its state changes and item ids in one transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from popbench.errors import StorageError

SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY, hash BLOB NOT NULL, view INTEGER NOT NULL,
    committed BLOB NOT NULL, state_root BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    address BLOB PRIMARY KEY, balance INTEGER NOT NULL, stake INTEGER NOT NULL,
    rewards INTEGER NOT NULL, nonce INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS items (id BLOB PRIMARY KEY, height INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pow_blocks (
    hash BLOB PRIMARY KEY, prev_hash BLOB NOT NULL, height INTEGER NOT NULL,
    total_work TEXT NOT NULL, encoded BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS pow_arrivals (
    hash BLOB PRIMARY KEY, height INTEGER NOT NULL, miner INTEGER NOT NULL, seen_ns INTEGER NOT NULL);
"""
Row = tuple[bytes, int, int, int, int]
ITEM_QUERY_CHUNK = 500  # ids per IN (...) query: under SQLite's default limit of bound parameters


def node_database(data_dir: Path, node_id: int) -> Path:
    """Where node ``node_id`` keeps its database: the node, join and the harness all look here."""
    return data_dir / f"node-{node_id}.sqlite"


def _no_fault() -> None:
    return None


class Store:
    """The node's database; used from the node's one thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Called before every transaction: an emulated disk fault (popbench/faults.py) blocks or raises here,
        # before anything is written, so a failed write leaves the database exactly as it was.
        self.before_write: Callable[[], None] = _no_fault
        try:
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as err:
            raise StorageError(f"cannot open the node database {path}: {err}") from err

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    # -- PoP chain ---------------------------------------------------------------------------------
    def save_committed(self, height: int, block_hash: bytes, view: int, committed: bytes, item_ids: Sequence[bytes],
                       accounts: Iterable[Row], state_root: bytes) -> None:  # fmt: skip
        with self._transaction():
            self._db.execute("INSERT INTO blocks VALUES (?, ?, ?, ?, ?)", (height, block_hash, view, committed, state_root))
            self._db.executemany("INSERT OR IGNORE INTO items VALUES (?, ?)", ((i, height) for i in item_ids))
            self._upsert_accounts(accounts)

    def replace_state(self, height: int, block_hash: bytes, committed: bytes, accounts: Iterable[Row], state_root: bytes) -> None:
        """Install a verified snapshot: the state at ``height`` and the block that certifies it."""
        with self._transaction():
            self._delete_chain()
            self._db.execute("INSERT INTO blocks VALUES (?, ?, ?, ?, ?)", (height, block_hash, 0, committed, state_root))
            self._upsert_accounts(accounts)

    def clear_chain(self) -> None:
        """Forget every block, account and item: what a node joining at height 0 starts from."""
        with self._transaction():
            self._delete_chain()

    def _delete_chain(self) -> None:
        for table in ("blocks", "accounts", "items"):
            self._db.execute(f"DELETE FROM {table}")

    def replace_accounts(self, accounts: Iterable[Row]) -> None:
        """Rewrite the whole account table (the state rebuilt by replaying the stored blocks)."""
        with self._transaction():
            self._db.execute("DELETE FROM accounts")
            self._upsert_accounts(accounts)

    def _upsert_accounts(self, accounts: Iterable[Row]) -> None:
        self._db.executemany("INSERT OR REPLACE INTO accounts VALUES (?, ?, ?, ?, ?)", accounts)

    def head(self) -> tuple[int, bytes] | None:
        row = self._one("SELECT height, hash FROM blocks ORDER BY height DESC LIMIT 1")
        return (row[0], row[1]) if row else None

    def committed_range(self, from_height: int, count: int) -> list[bytes]:
        rows = self._all("SELECT committed FROM blocks WHERE height >= ? ORDER BY height LIMIT ?", (from_height, count))
        return [row[0] for row in rows]

    def stored_blocks(self, from_height: int, count: int) -> list[tuple[int, bytes, bytes]]:
        """``(height, stored hash, committed record)`` rows from ``from_height`` on: what a verifier reads."""
        rows = self._all("SELECT height, hash, committed FROM blocks WHERE height >= ? ORDER BY height LIMIT ?", (from_height, count))
        return [(row[0], row[1], row[2]) for row in rows]

    def committed_at(self, height: int) -> bytes | None:
        row = self._one("SELECT committed FROM blocks WHERE height = ?", (height,))
        return row[0] if row else None

    def block_hashes(self) -> list[tuple[int, bytes]]:
        return [(row[0], row[1]) for row in self._all("SELECT height, hash FROM blocks ORDER BY height")]

    def state_root_at(self, height: int) -> bytes | None:
        row = self._one("SELECT state_root FROM blocks WHERE height = ?", (height,))
        return row[0] if row else None

    def load_accounts(self) -> list[Row]:
        return [(r[0], r[1], r[2], r[3], r[4]) for r in self._all("SELECT address, balance, stake, rewards, nonce FROM accounts")]

    def seen_ids(self) -> set[bytes]:
        return {row[0] for row in self._all("SELECT id FROM items")}

    def has_item(self, item_id: bytes) -> bool:
        return self._one("SELECT 1 FROM items WHERE id = ?", (item_id,)) is not None

    def item_committed(self, item_id: bytes, up_to_height: int) -> bool:
        """Whether ``item_id`` was committed in a block at or below ``up_to_height``."""
        return self._one("SELECT 1 FROM items WHERE id = ? AND height <= ?", (item_id, up_to_height)) is not None

    def items_committed(self, item_ids: Sequence[bytes], up_to_height: int) -> set[bytes]:
        """Those of ``item_ids`` committed at or below ``up_to_height`` (one query per 500 ids)."""
        found: set[bytes] = set()
        for start in range(0, len(item_ids), ITEM_QUERY_CHUNK):
            chunk = item_ids[start : start + ITEM_QUERY_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._all(f"SELECT id FROM items WHERE height <= ? AND id IN ({marks})", (up_to_height, *chunk))
            found.update(row[0] for row in rows)
        return found

    # -- PoW chain ---------------------------------------------------------------------------------
    def save_pow_block(self, block_hash: bytes, prev_hash: bytes, height: int, total_work: int, encoded: bytes) -> None:
        with self._transaction():
            self._db.execute("INSERT OR IGNORE INTO pow_blocks VALUES (?, ?, ?, ?, ?)",
                             (block_hash, prev_hash, height, format(total_work, "x"), encoded))  # fmt: skip

    def load_pow_blocks(self) -> list[tuple[bytes, bytes, int, int, bytes]]:
        rows = self._all("SELECT hash, prev_hash, height, total_work, encoded FROM pow_blocks ORDER BY height")
        return [(r[0], r[1], r[2], int(r[3], 16), r[4]) for r in rows]

    def save_pow_arrival(self, block_hash: bytes, height: int, miner: int, seen_ns: int) -> None:
        """When this node first saw (or mined) a block; a later sighting keeps the first time."""
        with self._transaction():
            self._db.execute("INSERT OR IGNORE INTO pow_arrivals VALUES (?, ?, ?, ?)", (block_hash, height, miner, seen_ns))

    def load_pow_arrivals(self) -> list[tuple[bytes, int, int, int]]:
        rows = self._all("SELECT hash, height, miner, seen_ns FROM pow_arrivals ORDER BY seen_ns")
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    # -- plumbing ----------------------------------------------------------------------------------
    def _transaction(self) -> _Transaction:
        self.before_write()
        return _Transaction(self._db, self.path)

    def _one(self, sql: str, args: tuple[object, ...] = ()) -> tuple[Any, ...] | None:  # SQLite rows are untyped
        try:
            row: tuple[Any, ...] | None = self._db.execute(sql, args).fetchone()
            return row
        except sqlite3.Error as err:
            raise StorageError(f"{self.path}: {err}") from err

    def _all(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as err:
            raise StorageError(f"{self.path}: {err}") from err


class _Transaction:
    """BEGIN ... COMMIT, or ROLLBACK on any error; sqlite3 errors leave as StorageError."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self._path = path

    def __enter__(self) -> None:
        self._db.execute("BEGIN")

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if kind is None:
            self._db.execute("COMMIT")
            return
        self._db.execute("ROLLBACK")
        if isinstance(error, sqlite3.Error):
            raise StorageError(f"{self._path}: {error}") from error
