"""The STATUS of a PoP validator: chain head, consensus position and catch-up tallies over the shared fields.

The builder reads what :class:`PopStatusSource` names and nothing else, so it depends on these small
Protocols rather than on the node (the node imports this module, never the reverse). Reading changes
nothing. Fields: popbench.wire.status.PopStatus, docs/protocol.md (STATUS).
"""

from __future__ import annotations

from collections.abc import Mapping, Sized
from typing import Protocol

from popbench.wire.status import PopStatus, SeriesTally, SharedStatusFields


class ChainHead(Protocol):
    """The committed head (popbench.pop.ledger.Ledger)."""

    @property
    def height(self) -> int: ...

    @property
    def head_hash(self) -> bytes: ...


class ConsensusPosition(Protocol):
    """Where the PBFT engine stands (popbench.pop.pbft.PbftEngine)."""

    @property
    def view(self) -> int: ...

    @property
    def proposals_refused(self) -> Mapping[str, int]: ...

    def leader(self, view: int | None = None) -> int: ...


class CatchUpTally(Protocol):
    """What catch-up counted (popbench.pop.catchup.CatchUp)."""

    @property
    def blocks_fetched(self) -> int: ...

    @property
    def sync_failures(self) -> int: ...


class PopStatusSource(Protocol):
    """What the PoP status builder reads of its node (popbench.pop.node.Node)."""

    @property
    def ledger(self) -> ChainHead: ...

    @property
    def engine(self) -> ConsensusPosition: ...

    @property
    def catchup(self) -> CatchUpTally: ...

    @property
    def mempool(self) -> Sized: ...

    @property
    def round_times(self) -> SeriesTally: ...

    def shared_status_fields(self) -> SharedStatusFields: ...


def pop_node_status(node: PopStatusSource) -> PopStatus:
    ledger, engine, catchup = node.ledger, node.engine, node.catchup
    return PopStatus(
        **node.shared_status_fields(),
        height=ledger.height, head_hash=ledger.head_hash.hex(), view=engine.view, leader=engine.leader(),
        mempool=len(node.mempool), round_time_s=node.round_times.summary(),
        proposals_refused=dict(engine.proposals_refused),
        blocks_fetched=catchup.blocks_fetched, sync_failures=catchup.sync_failures,
    )  # fmt: skip
