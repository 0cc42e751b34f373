"""Direct links opened when a message needs one, on a bounded mesh.

On a full mesh every validator already has a link to every other. On a bounded mesh a node keeps links
only to its mesh neighbours; a request for anyone else (items from a leader, blocks to catch up) or its
answer opens a link to its addressee the first time, holds the frames while the dial runs, and sends
them in order once the link is up. (Consensus messages for one validator never wait for a dial: they
travel hop by hop over the mesh, popbench/pop/routing.py.) At most ``limit`` links this node dialled this
way stay open: the least recently used one is closed when a new one would pass the limit (its peer may
dial it again when it needs to). A failed dial drops what it held.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from popbench.net.peers import PeerManager
from popbench.wire import DisconnectReason, Message

ON_DEMAND_LIMIT = 32  # links dialled on demand kept open at once (item and block requests and their answers)
HELD_FRAMES_LIMIT = 256  # messages held for one addressee while its link is dialled; more are dropped


class OnDemandLinks:
    """Sends to any validator of the genesis, dialling a direct link when there is none."""

    def __init__(self, peers: PeerManager, keep: frozenset[int], limit: int = ON_DEMAND_LIMIT) -> None:
        self.peers = peers
        self.keep = keep  # mesh neighbours: never closed here
        self.limit = limit
        self._held: dict[int, list[Message]] = {}
        self._dialing: dict[int, asyncio.Task[None]] = {}
        self._used: OrderedDict[int, None] = OrderedDict()  # on-demand peers, least recently used first

    def send(self, node_id: int, message: Message) -> None:
        link = self.peers.links.get(node_id)
        if link is not None and link.is_open:
            link.send(message)
            self._touch(node_id)
            return
        held = self._held.setdefault(node_id, [])
        if len(held) >= HELD_FRAMES_LIMIT:
            return
        held.append(message)
        self._dial(node_id)

    def _dial(self, node_id: int) -> None:
        if node_id in self._dialing or node_id == self.peers.host.identity.node_id:
            return
        address = self.peers.addresses.get(node_id)
        if address is None:
            self._held.pop(node_id, None)
            return
        task = asyncio.get_running_loop().create_task(self._open(node_id, address))
        self._dialing[node_id] = task

    async def _open(self, node_id: int, address: tuple[str, int]) -> None:
        try:
            await self.peers.dial_once(address, node_id)
        finally:
            del self._dialing[node_id]
        held = self._held.pop(node_id, [])
        link = self.peers.links.get(node_id)  # ours, or one the peer dialled meanwhile: either carries them
        if link is None or not link.is_open:
            return
        for message in held:
            link.send(message)
        self._touch(node_id)

    def _touch(self, node_id: int) -> None:
        if node_id in self.keep:
            return
        self._used[node_id] = None
        self._used.move_to_end(node_id)
        while len(self._used) > self.limit:
            oldest, _ = self._used.popitem(last=False)
            link = self.peers.links.get(oldest)
            if link is not None and link.outbound:
                link.disconnect(DisconnectReason.REQUESTED, "idle on-demand link")
