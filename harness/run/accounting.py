"""Jepsen's accounting of a PBFT run: every acknowledged item is committed exactly once, or it is lost.

A node that answers SUBMIT with ACCEPTED has promised the item a place in the chain. After the run
the committed chain is read back from the databases (the node holding the highest verified chain: the
safety check has already shown that every node agrees with it where they overlap) and every item a
driver or a miner was told ACCEPTED is looked up:

- **lost**: acknowledged, and not in the chain once the run drained (a hard gate: grade F, exit 1);
- **unresolved**: acknowledged and not in the chain, in a run that stopped before its drain (an
  interrupted run cannot say whether they would have committed; listed, not a gate);
- **duplicated**: committed at more than one height (the ledger refuses this; the check proves it);
- **unexpected**: committed, and submitted by no driver or miner of the run (a hard gate).

Items a node refused (BUSY, a bad signature, ...) promise nothing and are not judged here; an invalid
item that committed anyway is the throughput figures' ``invalid_committed``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from harness.load.records import ProofRecord, read_records
from popbench.errors import ProtocolError, StorageError
from popbench.pop.ledger import CommittedBlock
from popbench.store import Store, node_database
from popbench.wire import RejectReason

LISTED = 10  # ids listed per kind in the report; the counts are exact
PAGE_BLOCKS = 256


@dataclass
class Accounting:
    """Where every acknowledged item ended up (hex ids: the first ``LISTED`` of each kind)."""

    acknowledged: int = 0
    committed: int = 0  # items in the chain read back
    chain_height: int = 0
    chain_node: int | None = None  # whose database was read
    drained: bool = True
    lost: int = 0
    unresolved: int = 0
    duplicated: int = 0
    unexpected: int = 0
    lost_ids: list[str] = field(default_factory=list)
    unresolved_ids: list[str] = field(default_factory=list)
    duplicated_ids: list[str] = field(default_factory=list)
    unexpected_ids: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No acknowledged item lost, none committed twice, nothing committed that nobody submitted."""
        return self.lost == 0 and self.duplicated == 0 and self.unexpected == 0


def committed_counts(database: Path) -> tuple[Counter[bytes], int]:
    """How often each item id appears in a node's stored chain, and the chain's height."""
    counts: Counter[bytes] = Counter()
    height = 0
    with Store(database) as store:
        while page := store.stored_blocks(height + 1, PAGE_BLOCKS):
            for stored_height, _, raw in page:
                try:
                    block, _ = CommittedBlock.decode_certified(raw)
                except ProtocolError as err:
                    raise StorageError(f"{database}: block {stored_height} does not decode: {err}") from err
                counts.update(block.proof_ids)
                counts.update(block.transfer_ids)
                height = stored_height
    return counts, height


def account(records: Iterable[ProofRecord], miner_accepted: Iterable[bytes], counts: Counter[bytes],
            drained: bool) -> Accounting:  # fmt: skip
    """Judge every acknowledged item against ``counts`` (the chain's item ids)."""
    submitted: set[bytes] = set()
    acknowledged: list[bytes] = []
    for record in records:
        submitted.add(record.proof_id)
        if record.reason == RejectReason.ACCEPTED:
            acknowledged.append(record.proof_id)
    for item_id in miner_accepted:
        submitted.add(item_id)
        acknowledged.append(item_id)
    missing = [item_id for item_id in acknowledged if counts.get(item_id, 0) == 0]
    twice = sorted(item_id for item_id, count in counts.items() if count > 1)
    stray = sorted(item_id for item_id in counts if item_id not in submitted)
    result = Accounting(acknowledged=len(acknowledged), committed=sum(counts.values()), drained=drained,
                        duplicated=len(twice), unexpected=len(stray),
                        duplicated_ids=_hex(twice), unexpected_ids=_hex(stray))  # fmt: skip
    if drained:
        result.lost, result.lost_ids = len(missing), _hex(missing)
    else:
        result.unresolved, result.unresolved_ids = len(missing), _hex(missing)
    return result


def account_run(data_dir: Path, heights: dict[int, int], records_paths: Iterable[Path], miner_accepted: Iterable[bytes],
                drained: bool) -> Accounting:  # fmt: skip
    """Read the highest verified chain of the run (``heights``: node -> verified height) and account for it."""
    counts: Counter[bytes] = Counter()
    node, height = None, 0
    if heights:
        node = max(heights, key=lambda n: (heights[n], -n))
        counts, height = committed_counts(node_database(data_dir, node))
    records = (record for path in records_paths if path.exists() for record in read_records(path))
    result = account(records, miner_accepted, counts, drained)
    result.chain_node, result.chain_height = node, height
    return result


def _hex(ids: list[bytes]) -> list[str]:
    return [item_id.hex() for item_id in ids[:LISTED]]
