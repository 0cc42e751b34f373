"""One simulated schedule from one integer seed: draw it, build the network, run it, judge it.

A schedule has two phases. Until ``stable_at`` the adversary is loose (tests/sim/scheduler.py) and
clients submit the workload to honest nodes at random moments. At ``stable_at`` every partition has
healed and the network turns synchronous, and every honest node must then commit beyond the highest
height any honest node had reached, within ``LIVENESS_BOUND_S`` of virtual time, while clients keep
submitting an item every ``LOAD_INTERVAL_NS``. Byzantine nodes (up to f) misbehave throughout; in
the honest family up to f nodes instead crash and restart from their database. Agreement, validity
and the heads are checked after every event, each honest state root at the end. A failure raises
``SimulationFailure`` naming the seed, the command that replays it and the last events.
"""

from __future__ import annotations

import dataclasses
import random
import shlex
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import cache

from popbench import crypto
from popbench.genesis import VOTE_PATHS, ChainParams, Genesis, make_genesis
from popbench.model.hashing import address_of
from popbench.model.proof import Proof
from popbench.model.transfer import Transfer
from popbench.pop.pbft import PbftEngine
from popbench.wire import ItemKind
from tests.sim.byzantine import COLLECTOR_BEHAVIOURS, CONSENSUS_BEHAVIOURS, LATER_BEHAVIOURS, LEDGER_BEHAVIOURS, ByzantineHost
from tests.sim.invariants import Checker, InvariantViolation
from tests.sim.network import NS_PER_S, Adversary, EventQueue, SimHost, SimNetwork, remember_bls_checks, virtual_wall_clock
from tests.sim.scheduler import NS_PER_MS, Chaos, RandomAdversary

SIM_PARAMS = ChainParams(batch_size=4, batch_interval_ms=20, view_timeout_ms=400, view_timeout_max_ms=3200,
                         min_work_bits=0, mempool_limit=1000, collector_timeout_ms=100)  # fmt: skip
LIVENESS_BOUND_S = 40.0  # virtual seconds after stabilisation for every honest node to commit again
MAX_STEPS = 200_000  # events per schedule; more means something loops
LOAD_INTERVAL_NS = NS_PER_S // 10  # once stable, clients submit an item this often (a steady benchmark load)
MAX_CHAOS_ITEMS = 14
WORKLOAD_ITEMS = MAX_CHAOS_ITEMS + round(LIVENESS_BOUND_S * NS_PER_S / LOAD_INTERVAL_NS) + 1
RESTART_DOWN_NS = (50 * NS_PER_MS, 1500 * NS_PER_MS)


class Family(StrEnum):
    """What faults a schedule's validators have (the network is unreliable in every family)."""

    HONEST = "honest"  # none Byzantine; up to f crash and restart
    BYZANTINE = "byzantine"  # up to f with the behaviours of tests/sim/byzantine.py
    LEDGER = "ledger"  # up to f leaders that list an item twice
    NODE_FAULTS = "node-faults"  # up to f running an engine of popbench.pop.byzantine, as a profile selects
    MIXED = "mixed"  # n = 7: one Byzantine as in BYZANTINE and one honest node that crashes and restarts


FAMILIES = tuple(family.value for family in Family)
NODE_FAULT = "node:"  # a Byzantine node running one of the engines a real run's profile can select
# Engines added after the node-faults seeds were first reported: the family does not draw them, so those
# seeds keep their schedules; tests/test_collector_votes.py scripts them instead.
LATER_NODE_FAULTS = frozenset({"withhold-certificates", "bad-aggregate", "forged-bitmap"})
PACKAGE_P = 0.5  # chance that a Byzantine node gets one of the packages below rather than a random mix
PACKAGES = (
    ("amnesia", "bad-signature-votes"),  # poisons honest locks, then votes for a conflicting block
    ("amnesia", "bad-signature-votes", "withhold"),
    ("amnesia", "equivocate-votes"),
    ("equivocate-proposals", "forged-new-view"),
)
LATER_PACKAGES = (("amnesia", "equivocate-new-view", "equivocate-proposals"),)  # the mixed family's alone
COLLECTOR_PACKAGES = (  # the collector path's: a lying collector beside a voter that poisons its shares
    ("bad-signature-votes", "forged-bitmap"),
    ("amnesia", "bad-aggregate", "bad-signature-votes"),
    ("equivocate-certificates", "equivocate-proposals"),
    ("silent-collector", "withhold"),
)
VOTES = tuple(VOTE_PATHS)  # "all-to-all", "collector": every family runs on both vote paths
REPLAY_COMMAND = (
    "POPBENCH_SIM_SEED={seed} POPBENCH_SIM_FAMILY={family} POPBENCH_SIM_VOTES={votes} "
    ".venv/bin/python -m pytest tests/test_simulation.py -k replay -q"
)


class SimulationFailure(AssertionError):
    """Raised when a schedule breaks an invariant; its message is the whole report."""


@dataclass(frozen=True)
class Restart:
    """Node ``node`` crashes at ``down_ns`` (losing everything but its database) and restarts at ``up_ns``."""

    node: int
    down_ns: int
    up_ns: int


@dataclass(frozen=True)
class Schedule:
    """Everything about one run that is drawn before it starts."""

    seed: int
    family: str
    n: int
    byzantine: dict[int, tuple[str, ...]]
    chaos: Chaos
    items: int  # submitted during the chaotic phase
    restarts: tuple[Restart, ...] = ()
    votes: str = "all-to-all"  # the vote path; not drawn, so a seed means the same schedule on both

    def summary(self) -> str:
        faulty = ", ".join(f"{node}: {'+'.join(kinds)}" for node, kinds in sorted(self.byzantine.items())) or "none"
        restarts = ", ".join(f"node {r.node} down {r.down_ns / 1e9:.2f}-{r.up_ns / 1e9:.2f}s" for r in self.restarts)
        return f"n={self.n}, {self.votes} votes, byzantine {{{faulty}}}, {self.items} items, restarts [{restarts}]; {self.chaos.summary()}"

    @property
    def replay_command(self) -> str:
        return REPLAY_COMMAND.format(seed=self.seed, family=shlex.quote(self.family), votes=self.votes)


def draw_schedule(rng: random.Random, seed: int, family: str, votes: str = "all-to-all") -> Schedule:
    """The schedule of ``seed`` in ``family`` (see ``Family``) on the vote path ``votes``.

    On the collector path the Byzantine menus add the collectors' lies (COLLECTOR_BEHAVIOURS); the
    all-to-all path's draws are exactly what they were before it existed.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    if votes not in VOTES:
        raise ValueError(f"unknown vote path {votes!r}; known: {', '.join(VOTES)}")
    family = Family(family)
    collector = votes == "collector"
    n = 4 if rng.random() < 0.75 else rng.randint(5, 7)
    n = 7 if family == Family.MIXED else n  # f = 2: room for a Byzantine node and a restarted one
    f = (n - 1) // 3
    faulty = 0 if family == Family.HONEST else 1 if family == Family.MIXED else rng.randint(1, f)
    consensus = {**CONSENSUS_BEHAVIOURS, **(COLLECTOR_BEHAVIOURS if collector else {})}
    menu = sorted(LEDGER_BEHAVIOURS if family == "ledger" else consensus)
    if family == Family.MIXED:
        menu = sorted({**consensus, **LATER_BEHAVIOURS})
    if family == "node-faults":
        menu = [NODE_FAULT + kind for kind in node_fault_engines() if kind not in LATER_NODE_FAULTS]
    byzantine = {node: _draw_behaviours(rng, menu, family, collector) for node in sorted(rng.sample(range(n), faulty))}
    stable_at_ns = rng.randint(NS_PER_S // 2, 5 * NS_PER_S)
    chaos, items = Chaos.draw(rng, n, stable_at_ns), rng.randint(4, MAX_CHAOS_ITEMS)
    restarts: tuple[Restart, ...] = ()  # drawn last: the other families' seeds keep their meaning
    if family == Family.HONEST:
        restarts = _draw_restarts(rng, n, stable_at_ns)
    elif family == Family.MIXED:
        restarts = (_restart(rng, rng.choice([node for node in range(n) if node not in byzantine]), stable_at_ns),)
    return Schedule(seed, family, n, byzantine, chaos, items, restarts, votes)


def _draw_restarts(rng: random.Random, n: int, stable_at_ns: int) -> tuple[Restart, ...]:
    """Up to f crash-restarts, of distinct nodes: a restarted node forgets its lock, so each counts as a fault."""
    nodes = rng.sample(range(n), rng.choice((0, 0, rng.randint(1, (n - 1) // 3))))
    return tuple(_restart(rng, node, stable_at_ns) for node in sorted(nodes))


def _restart(rng: random.Random, node: int, stable_at_ns: int) -> Restart:
    down_ns = rng.randrange(0, stable_at_ns)
    return Restart(node, down_ns, min(down_ns + rng.randint(*RESTART_DOWN_NS), stable_at_ns))


def _draw_behaviours(rng: random.Random, menu: list[str], family: Family, collector: bool = False) -> tuple[str, ...]:
    """One to three behaviours; in the byzantine family often a known-potent package (Jepsen's nemesis packages)."""
    packages = PACKAGES + (COLLECTOR_PACKAGES if collector else ())
    if family == Family.BYZANTINE and rng.random() < PACKAGE_P:
        return rng.choice(packages)
    if family == Family.MIXED and rng.random() < PACKAGE_P:
        return rng.choice(packages + LATER_PACKAGES)
    if family == "node-faults":
        return (rng.choice(menu),)
    return tuple(sorted(rng.sample(menu, rng.randint(1, min(3, len(menu))))))


def node_fault_engines() -> dict[str, type[PbftEngine]]:
    """The faulty engines a profile can select, by name (popbench.pop.byzantine).

    Imported here, not at the top, so the other families still run against an older tree (to replay a
    finding on the engine it was found in).
    """
    from popbench.kinds import ByzantineBehaviour, values
    from popbench.pop.byzantine import ENGINES

    return {kind: ENGINES[ByzantineBehaviour(kind)] for kind in values(ByzantineBehaviour)}


@cache
def sim_genesis(n: int, votes: str = "all-to-all") -> tuple[Genesis, tuple[crypto.SigningKey, ...]]:
    params = dataclasses.replace(SIM_PARAMS, votes=VOTE_PATHS[votes])
    genesis, keys = make_genesis(n, seed=f"popbench-sim-{n}", params=params)
    remember_bls_checks(genesis)
    return genesis, tuple(keys)


@cache
def workload(n: int, gapped: bool = False, votes: str = "all-to-all") -> tuple[tuple[ItemKind, bytes], ...]:
    """Items for the chain of ``n`` validators, made once per process: proofs and some transfers.

    ``gapped`` adds payments whose account nonce skips ahead: admission accepts them, execution skips
    them (issue 9 item 2: a restarted node must re-apply such a block exactly as before).
    """
    genesis, keys = sim_genesis(n, votes)  # items name the chain id, which the vote path changes
    owner = crypto.derive_key("popbench-sim-owner", 0)
    items: list[tuple[ItemKind, bytes]] = []
    for index in range(WORKLOAD_ITEMS):
        if gapped and index % 8 == 5:  # to an address no account holds yet: skipped, it must not create one
            nobody = crypto.derive_key("popbench-sim-nobody", index).public_key
            transfer = Transfer.create(keys[1], genesis.chain_id, address_of(nobody), 10, 1, 1_000 + index)
            items.append((ItemKind.TRANSFER, transfer.encode()))
        elif index % 4 == 3:  # a payment from validator 0's account, nonces in order
            transfer = Transfer.create(keys[0], genesis.chain_id, address_of(owner.public_key), 10, 1, index // 4)
            items.append((ItemKind.TRANSFER, transfer.encode()))
        else:
            proof = Proof.create(owner, genesis.chain_id, index.to_bytes(4, "big"), 0, 1, 1_000 + index)
            items.append((ItemKind.PROOF, proof.encode()))
    return tuple(items)


@cache
def item_ids(items: tuple[tuple[ItemKind, bytes], ...]) -> frozenset[bytes]:
    """The ids of a workload's items (what a client submitted), worked out once per workload."""
    return frozenset((Proof.decode(raw) if kind == ItemKind.PROOF else Transfer.decode(raw)).id for kind, raw in items)


class World:
    """The network, its hosts and the checker of one schedule."""

    def __init__(self, genesis: Genesis, keys: tuple[crypto.SigningKey, ...], events: EventQueue, adversary: Adversary,
                 byzantine: dict[int, tuple[str, ...]], rng: random.Random, submitted: frozenset[bytes]) -> None:  # fmt: skip
        honest = [node for node in range(genesis.n) if node not in byzantine]
        self.checker = Checker(genesis, honest, submitted)
        self.network = SimNetwork(genesis, events, adversary, self.checker)
        self.honest = honest
        self.rng = rng
        for node in range(genesis.n):
            kinds = byzantine.get(node)
            host = self._host(keys[node], node, kinds)
            self.network.add_host(host)

    def _host(self, key: crypto.SigningKey, node: int, kinds: tuple[str, ...] | None) -> SimHost:
        """An honest host, a node fault from popbench.pop.byzantine (``node:<kind>``), or tests/sim/byzantine.py's."""
        if kinds is None:
            return SimHost(self.network, key, node)
        if kinds and kinds[0].startswith(NODE_FAULT):
            return SimHost(self.network, key, node, node_fault_engines()[kinds[0].removeprefix(NODE_FAULT)])
        return ByzantineHost(self.network, key, node, kinds, self.rng)

    @property
    def hosts(self) -> list[SimHost]:
        return self.network.hosts

    def honest_heights(self) -> dict[int, int]:
        return {node: self.hosts[node].ledger.height for node in self.honest}

    def submit_at(self, time_ns: int, node: int, item: tuple[ItemKind, bytes]) -> None:
        def submit() -> None:
            target = self._up(node)
            self.network.trace.add("submit", target, -1, "client submits an item")
            self.hosts[target].submit(*item)

        self.network.events.at(time_ns, submit)

    def crash_at(self, restart: Restart) -> None:
        host = self.hosts[restart.node]
        self.network.events.at(restart.down_ns, host.crash)
        self.network.events.at(restart.up_ns, host.restart)

    def _up(self, node: int) -> int:
        """``node``, or if it is down the next honest node that is up (a client tries another validator)."""
        candidates = [n for n in self.honest if self.hosts[n].up]
        return node if self.hosts[node].up or not candidates else min(candidates, key=lambda n: (n - node) % len(self.hosts))

    def keep_submitting(self, start_ns: int, items: list[tuple[ItemKind, bytes]]) -> None:
        """A steady client: one item every ``LOAD_INTERVAL_NS`` to a random honest node, while items last."""

        def submit_next() -> None:
            if items:
                node = self._up(self.rng.choice(self.honest))
                self.network.trace.add("submit", node, -1, "client submits an item")
                self.hosts[node].submit(*items.pop(0))
                self.network.events.after_ns(LOAD_INTERVAL_NS, submit_next)

        self.network.events.at(start_ns, submit_next)

    def run_until(self, time_ns: int, done: Callable[[], bool] = lambda: False) -> bool:
        """Run events up to ``time_ns`` (checking the heads after each); True as soon as ``done()``."""
        network = self.network
        while not done():
            next_ns = network.events.next_time_ns()
            if next_ns is None or next_ns > time_ns:
                network.events.now_ns = max(network.events.now_ns, time_ns)
                return done()
            network.step()
            self.checker.check_heads(self.hosts)
            if network.steps > MAX_STEPS:
                raise InvariantViolation(f"RUNAWAY: more than {MAX_STEPS} events; something loops")
        return True


@dataclass(frozen=True)
class Outcome:
    """What a passing schedule did: for the suite's figures."""

    steps: int
    virtual_s: float
    heights: dict[int, int]


def run_schedule(seed: int, family: str = "byzantine", votes: str = "all-to-all") -> Outcome:
    """Run the schedule of ``seed`` on the vote path ``votes``; raise ``SimulationFailure`` if any invariant breaks."""
    rng = random.Random(seed)
    schedule = draw_schedule(rng, seed, family, votes)
    genesis, keys = sim_genesis(schedule.n, votes)
    items = workload(schedule.n, gapped=family in (Family.HONEST, Family.MIXED), votes=votes)
    chaotic, fresh = items[: schedule.items], items[schedule.items :]
    events = EventQueue()
    adversary = RandomAdversary(rng, schedule.chaos, lambda: events.now_ns)
    world = World(genesis, keys, events, adversary, schedule.byzantine, rng, item_ids(items))
    identity = f"seed: {seed}\nschedule: {schedule.summary()}\nreplay: {schedule.replay_command}"
    return run_world(world, identity, lambda: _run_phases(world, schedule, chaotic, fresh))


def run_world(world: World, identity: str, body: Callable[[], None]) -> Outcome:
    """Run ``body`` on ``world`` under virtual time; any broken invariant or crash becomes a ``SimulationFailure``."""
    with virtual_wall_clock(world.network.events):
        try:
            body()
        except InvariantViolation as err:
            raise SimulationFailure(failure_report(str(err), identity, world)) from None
        except Exception as err:  # an exception escaping a node is a finding: reported with its seed
            raise SimulationFailure(failure_report(f"CRASH: {crash_site(err)}", identity, world)) from err
        finally:
            world.network.close()
    return Outcome(world.network.steps, world.network.events.now_ns / NS_PER_S, world.honest_heights())


def _run_phases(
    world: World, schedule: Schedule, chaotic: tuple[tuple[ItemKind, bytes], ...], fresh: tuple[tuple[ItemKind, bytes], ...]
) -> None:
    rng, stable_at_ns = world.rng, schedule.chaos.stable_at_ns
    for item in chaotic:
        world.submit_at(rng.randrange(0, stable_at_ns), rng.choice(world.honest), item)
    for restart in schedule.restarts:
        world.crash_at(restart)
    for host in world.hosts:
        host.start()
    world.run_until(stable_at_ns)
    check_liveness(world, stable_at_ns, fresh)


def check_liveness(world: World, stable_at_ns: int, fresh: tuple[tuple[ItemKind, bytes], ...]) -> None:
    """From a stable network, every honest node must commit beyond the highest honest height so far."""
    target = max(world.honest_heights().values()) + 1
    world.keep_submitting(stable_at_ns, list(fresh))
    deadline_ns = stable_at_ns + round(LIVENESS_BOUND_S * NS_PER_S)
    if not world.run_until(deadline_ns, lambda: min(world.honest_heights().values()) >= target):
        stuck = {node: height for node, height in world.honest_heights().items() if height < target}
        details = "; ".join(_engine_state(world.hosts[node]) for node in sorted(stuck))
        raise InvariantViolation(
            f"LIVENESS: {LIVENESS_BOUND_S:.0f}s after the network stabilised, honest nodes {sorted(stuck)} "
            f"have not reached height {target}: {details}"
        )
    world.checker.check_state_roots(world.hosts)


def _engine_state(host: SimHost) -> str:
    engine = host.engine
    lock = engine.prepared
    locked = f"locked on {lock.proposal.block.hash[:4].hex()} from view {lock.view}" if lock else "not locked"
    return (
        f"node {host.node_id} at height {host.ledger.height}, view {engine.view}, {locked}, "
        f"refused {dict(sorted(engine.proposals_refused.items()))}, mempool {len(host.mempool)}, "
        f"collector fallbacks {engine.collector_fallbacks}"
    )


def crash_site(err: Exception) -> str:
    """The exception and the innermost popbench frame it came from."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if "/popbench/" in f.filename]
    where = f" at {frames[-1].filename.split('/popbench/')[-1]}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
    return f"{type(err).__name__}: {err}{where}"


def failure_report(problem: str, identity: str, world: World) -> str:
    network = world.network
    states = "\n".join(f"  {_engine_state(host)}" for host in network.hosts)
    return (f"simulated schedule failed: {problem}\n{identity}\n"
            f"at virtual time {network.events.now_ns / NS_PER_S:.6f}s after {network.steps} events; nodes:\n{states}\n"
            f"last {len(network.trace.entries)} events:\n{network.trace.render(network.genesis)}")  # fmt: skip
