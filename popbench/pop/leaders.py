"""Who leads a view: the stake-weighted rotation, minus validators that recently missed their turn.

With plain rotation (``leader_for_view(v + h)``) one crashed validator of four costs a view timeout at
every height it would lead: the network committed in bursts between 2 s stalls (issue 20). Here, as
in Diem/Aptos's leader reputation, the schedule is a function of the committed chain, so every honest
node that holds the same chain computes the same leader:

- **A missed turn** is read off two consecutive committed headers: block k-1 was proposed in view a,
  block k in view b > a, so the leaders of views a .. b-1 at height k (other than block k's proposer)
  led views that did not commit. Headers are what every honest node agrees on; commit certificates,
  which each node assembles from the votes it happened to receive, are not.
- **Exclusion**: a validator that missed a turn at height k leads nothing until height
  ``k + exclusion(m)``, where m is how many turns it missed in the last ``WINDOW`` heights and
  ``exclusion(m) = min(BASE_PER_VALIDATOR * n * 2**(m-1), WINDOW)``: a crashed validator is retried
  after 16n heights, then 32n, ... up to ``WINDOW``; a validator that leads a committed block has shown
  it is back, and its misses are forgotten.
- **Probation**: a validator retried after an exclusion is given a short view timeout (the engine's
  ``probation timeout``), so the retry of a validator that is still down costs a fraction of a view.
- **At most f excluded** at once (the most recent misses first, then the lower id): n - f candidates
  always remain, f + 1 of them honest, and the views of one height cycle through every candidate, so
  an honest leader comes within f + 1 views as before (docs/consensus.md, "Leader reputation").

The leader of view v at height h is ``candidates[(v + h) % len(candidates)]``, ``candidates`` being the
genesis schedule's slots without the excluded validators; with nothing excluded that is exactly the
round-robin ``leader_for_view(v + h)``. Safety never depends on who leads (two nodes that disagree
about a leader at most see two proposals in one view, which PBFT's quorums already survive); a node
that disagrees (one that joined by snapshot and lacks older headers) only risks a view's liveness.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from popbench.genesis import Genesis
from popbench.model.block import Block

WINDOW = 1024  # heights: misses older than this are forgotten, and no exclusion is longer
BASE_PER_VALIDATOR = 16  # a first miss excludes for 16 n heights (64 at n = 4: a few seconds of blocks)


class LeaderSchedule:
    """The reputation-aware leader of (view, height), kept in step with the committed chain."""

    def __init__(self, genesis: Genesis, reputation: bool = True) -> None:
        self.slots = genesis.leader_schedule
        self.n = genesis.n
        self.f = genesis.f
        self.reputation = reputation
        self.head_height = 0
        self.head_view = 0
        self.misses: dict[int, deque[int]] = {}  # validator -> heights of its missed turns, oldest first
        self._candidates: tuple[int, ...] = self.slots
        self._excluded: frozenset[int] = frozenset()
        self._probation: frozenset[int] = frozenset()

    # -- asking ------------------------------------------------------------------------------------
    def leader(self, view: int, height: int) -> int:
        """The leader of ``view`` at ``height`` (meant for the next height; later ones use today's set)."""
        candidates = self._candidates
        return candidates[(view + height) % len(candidates)]

    def excluded(self) -> frozenset[int]:
        return self._excluded

    def on_probation(self, node: int) -> bool:
        """``node`` missed a turn lately and is being tried again: its view gets a short timeout."""
        return node in self._probation

    # -- learning from the chain -------------------------------------------------------------------
    def advance(self, block: Block) -> None:
        """``block`` is the new committed head: blame the leaders of the views it skipped, move on."""
        if self.reputation and block.height == self.head_height + 1:
            for view in range(self.head_view, block.view)[-self.n :]:  # a long partition blames each at most once
                missed = self.leader(view, block.height)
                if missed != block.proposer:
                    self.misses.setdefault(missed, deque()).append(block.height)
            self.misses.pop(block.proposer, None)  # it led a committed block: it is back
        self.head_height, self.head_view = block.height, max(block.view, self.head_view)
        if self.reputation:
            self._refresh(block.height + 1)

    def restore(self, blocks: Iterable[Block]) -> None:
        """Rebuild from the last committed headers, oldest first (a restart: ``WINDOW`` * 2 of them suffice)."""
        for block in blocks:
            if block.height != self.head_height + 1:
                self.head_height, self.head_view = block.height - 1, block.view  # the first header read
            self.advance(block)

    def reset_to(self, height: int, view: int) -> None:
        """A snapshot installed at ``height``: no history before it (docs/consensus.md says what that costs)."""
        self.misses.clear()
        self.head_height, self.head_view = height, view
        self._refresh(height + 1)

    def _refresh(self, height: int) -> None:
        for node in list(self.misses):
            kept = self.misses[node]
            while kept and kept[0] <= height - WINDOW:
                kept.popleft()
            if not kept:
                del self.misses[node]
        excluded = [node for node, heights in self.misses.items() if height < heights[-1] + self.exclusion(len(heights))]
        excluded.sort(key=lambda node: (-self.misses[node][-1], node))
        self._excluded = frozenset(excluded[: self.f])
        self._probation = frozenset(node for node in self.misses if node not in self._excluded)
        self._candidates = tuple(slot for slot in self.slots if slot not in self._excluded) or self.slots

    def exclusion(self, misses: int) -> int:
        """Heights a validator with ``misses`` recent missed turns is left out after its latest."""
        return min(BASE_PER_VALIDATOR * self.n << (misses - 1), WINDOW)
