"""On a bounded mesh, a submitted item goes to the coming leaders, not to every validator.

Flooding each item over a mesh of degree 8 hands it to every validator about eight times, in a frame of
its own at low rates: at n = 1000 and 10 proofs/s that was 80,000 frames a second before any vote, more
than two cores carry, and the first proposal took 20 s to reach everyone. The leader is the only
validator that needs an item before the proposal (as in Solana's Gulf Stream, which forwards
transactions to the expected leaders). So the validator a client submits to sends the item to the
leaders of the next ``LEADERS_AHEAD`` heights, and again at each commit until the item is in a block;
the leader floods the items of its proposal just before the proposal itself (popbench/pop/node.py), so
every validator receives them once per link, batched in one frame, and verifies them before it
prepares the block. docs/protocol.md, section 15.1.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

from popbench.pop.admission import gossip_batches
from popbench.wire import Gossip, ItemKind

LEADERS_AHEAD = 2  # the current height's leader and the next one: a view change shifts the schedule by one


class LeaderForwarding:
    """The items clients submitted to this node that no block holds yet, and where they were sent."""

    def __init__(self, send: Callable[[int, Gossip], None], coming_leaders: Callable[[], Iterable[int]], limit: int) -> None:
        self.send = send
        self.coming_leaders = coming_leaders
        self.limit = limit  # the mempool's bound: what is beyond it was refused BUSY anyway
        self._pending: OrderedDict[bytes, tuple[ItemKind, bytes]] = OrderedDict()  # id -> (kind, raw), oldest first

    def submitted(self, kind: ItemKind, item_id: bytes, raw: bytes) -> None:
        """A client's item this node admitted: to the coming leaders now, and kept until it commits."""
        self._pending[item_id] = (kind, raw)
        if len(self._pending) > self.limit:
            self._pending.popitem(last=False)
        self._send_to_leaders([(kind, raw)])

    def committed(self, item_ids: Iterable[bytes]) -> None:
        for item_id in item_ids:
            self._pending.pop(item_id, None)

    def resend(self) -> None:
        """After a commit the coming leaders changed: every item still pending goes to them (a leader that
        holds one already drops the repeat by its id, without decoding it)."""
        if self._pending:
            self._send_to_leaders(list(self._pending.values()))

    def __len__(self) -> int:
        return len(self._pending)

    def _send_to_leaders(self, items: list[tuple[ItemKind, bytes]]) -> None:
        batches = [batch for kind in ItemKind for batch in gossip_batches(kind, [raw for k, raw in items if k is kind])]
        for leader in dict.fromkeys(self.coming_leaders()):
            for batch in batches:
                self.send(leader, batch)
