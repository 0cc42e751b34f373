"""A load driver: one forked process that sends its share of the workload and records every proof.

It prepares (grinds and signs) its whole plan before the window, connects to its nodes, waits for the
window's start time, then sends on schedule (open loop) or keeps a fixed number in flight (closed
loop). It records, per proof, when it was due, when it went out, what the node answered and when its
commit was seen, and how late it sent: the report warns when the generator fell behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.load import workload
from harness.load.records import NO_ANSWER, ProofRecord, write_records
from harness.stats import LATENCY_BUCKETS_S, latency_bucket, percentile
from popbench.client import NodeClient
from popbench.errors import ClientError
from popbench.wire import TOPIC_COMMITS, Committed, ItemKind, RejectReason, SubmitResult

PROGRESS_EVERY_S = 1.0
SUBSCRIPTIONS = 2  # commit notifications from two nodes, so one crashed node loses no commit times
REDIAL_S = 1.0  # how often a driver tries a node whose connection closed (killed, wiped, restarting)
Address = tuple[str, int]
Report = Callable[[str, dict[str, Any]], None]


@dataclass
class DriverSpec:
    """One driver's share of the workload (the profile's fields it needs, already resolved)."""

    index: int
    drivers: int
    nodes: list[Address]
    chain_id: bytes
    slots: list[int]  # send offsets (ns after the window start) of this driver's share
    start_ns: int  # wall-clock start of the window, the same for every driver (set by the go)
    work_bits: int
    payload_bytes: int
    invalid_fraction: float
    invalid_kinds: list[workload.Expect]
    seed: int
    run_tag: int
    closed_loop_in_flight: int = 0  # > 0: closed loop with this many proofs outstanding
    window_s: float = 0.0  # closed loop: stop sending when the window ends
    item_kind: ItemKind = ItemKind.PROOF  # PoW runs send transfers
    drain_s: float = 5.0  # after the last send, how long to wait for outstanding commits
    records_path: Path = field(default_factory=lambda: Path("records.bin"))
    go_path: Path = field(default_factory=lambda: Path("go"))  # where the supervisor writes the start time
    p99_window_s: float = PROGRESS_EVERY_S  # each progress report's p99 covers the commits seen this long before it


class Driver:
    """Sends one plan and tracks every item's fate."""

    def __init__(self, spec: DriverSpec, plan: list[workload.Planned]) -> None:
        self.spec = spec
        self.plan = plan
        self.records = [ProofRecord(i, p.proof_id, int(p.expect), spec.start_ns + p.offset_ns) for i, p in enumerate(plan)]
        self.index_of = {p.proof_id: i for i, p in enumerate(plan) if p.expect is not workload.Expect.REPLAY}
        self.clients: list[NodeClient] = []
        self.outstanding = 0
        self.settled = asyncio.Event()
        self.invalid_committed = 0
        self.sent = 0
        self.committed = 0
        self.recent: deque[tuple[int, int]] = deque()  # (seen ns, latency ns) of the commits of the last p99 window
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)  # every commit's latency, for /metrics' histogram
        self.latency_sum_ns = 0
        self.unreachable: list[str] = []
        self._address_of: dict[NodeClient, Address] = {}
        self._subscribed: set[NodeClient] = set()
        self._waiting_on: dict[int, NodeClient] = {}  # items sent and not yet answered, by the client that took them
        self._redials: set[asyncio.Task[None]] = set()
        self._closing = False

    async def connect(self) -> None:
        """Connect to every node that answers; a node already down is skipped (and named in the summary)."""
        answers = await asyncio.gather(*(self._connect_one(address) for address in self.spec.nodes))
        if not any(answers):
            raise ClientError(f"no node answered: {', '.join(self.unreachable)}")
        for address, client in zip(self.spec.nodes, answers, strict=True):
            if client is not None:
                self._adopt(client, address)

    async def _connect_one(self, address: Address, quiet: bool = False) -> NodeClient | None:
        try:
            client = await NodeClient.connect(*address, chain_id=self.spec.chain_id)
        except ClientError:
            if not quiet:
                self.unreachable.append(f"{address[0]}:{address[1]}")
            return None
        client.on_result = self._on_result
        client.on_committed = self._on_committed
        return client

    # -- keeping connections through kills and wipes -------------------------------------------------
    @property
    def subscribed_to(self) -> list[Address]:
        """The nodes whose commit notifications this driver reads now."""
        return sorted(self._address_of[client] for client in self._subscribed)

    def _adopt(self, client: NodeClient, address: Address) -> None:
        self.clients.append(client)
        self._address_of[client] = address
        client.closed.add_done_callback(lambda _: self._lost(client))
        self._keep_subscribed()

    def _keep_subscribed(self) -> None:
        """Commit notifications from SUBSCRIPTIONS live nodes. A driver once subscribed to its first two
        nodes for good: the chaos profile wiped both, and from then on it saw no commit (the report's
        delivery fell to 58 % and a 245 s "stall" of a network committing 99 blocks a second)."""
        for client in self.clients:
            if len(self._subscribed) >= SUBSCRIPTIONS:
                return
            if client not in self._subscribed:
                client.subscribe(TOPIC_COMMITS)
                self._subscribed.add(client)

    def _lost(self, client: NodeClient) -> None:
        """A node closed its connection: items it had not answered get no answer (they promise nothing),
        another node's notifications replace its, and the driver dials it again until it is back."""
        if client in self.clients:
            self.clients.remove(client)
        self._subscribed.discard(client)
        unanswered = [index for index, taker in self._waiting_on.items() if taker is client]
        for index in unanswered:
            del self._waiting_on[index]
            self._unanswered(index)
        if self._closing:
            return
        self._keep_subscribed()
        address = self._address_of.pop(client)
        task = asyncio.get_running_loop().create_task(self._redial(address))
        self._redials.add(task)
        task.add_done_callback(self._redials.discard)

    async def _redial(self, address: Address) -> None:
        while not self._closing:
            await asyncio.sleep(REDIAL_S)  # redial period, not a synchronisation
            client = await self._connect_one(address, quiet=True)
            if client is not None:
                if self._closing:
                    client.close()
                    return
                self._adopt(client, address)
                return

    def _unanswered(self, index: int) -> None:
        record = self.records[index]
        if record.reason == NO_ANSWER:
            self._settle()  # never answered: settled now, whether or not its commit was seen

    # -- sending -----------------------------------------------------------------------------------
    async def run_open_loop(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time() + (self.spec.start_ns - time.time_ns()) / 1e9
        for index, planned in enumerate(self.plan):
            due = start + planned.offset_ns / 1e9
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing to the schedule, not a synchronisation
            self._send(index)

    async def run_closed_loop(self) -> None:
        await asyncio.sleep(max(0.0, (self.spec.start_ns - time.time_ns()) / 1e9))  # wait for the window
        limit = self.spec.closed_loop_in_flight
        self._room = asyncio.Event()
        end_ns = self.spec.start_ns + int(self.spec.window_s * 1e9)
        for index in range(len(self.plan)):
            while self.outstanding >= limit:
                self._room.clear()
                await self._room.wait()
            if time.time_ns() >= end_ns:
                return  # the window is over: the rest stays unsent (due at the window start, outside the steady window)
            self.records[index].due_ns = time.time_ns()  # closed loop: due when there is room
            self._send(index)

    def _send(self, index: int) -> None:
        record = self.records[index]
        record.sent_ns = time.time_ns()
        self.sent += 1
        self.outstanding += 1
        for attempt in range(len(self.clients)):  # a node that went down mid-run: the next one takes it
            client = self.clients[(index + attempt) % len(self.clients)]
            try:
                client.submit(index, self.spec.item_kind, self.plan[index].raw)
            except ClientError:
                continue
            self._waiting_on[index] = client
            return
        record.reason = NO_ANSWER
        self._settle()

    # -- answers -----------------------------------------------------------------------------------
    def _on_result(self, result: SubmitResult) -> None:
        if self._waiting_on.pop(result.request_id, None) is None:
            return  # answered after its node's connection was given up (cannot happen on one TCP link)
        record = self.records[result.request_id]
        record.answer_ns = time.time_ns()
        record.reason = int(result.reason)
        # settled now unless it was accepted and its commit is still to come (it may have come first)
        if result.reason != RejectReason.ACCEPTED or record.expect != workload.Expect.COMMIT or record.commit_ns:
            self._settle()

    def _on_committed(self, note: Committed) -> None:
        seen_ns = time.time_ns()
        for proof_id in note.transfer_ids if self.spec.item_kind == ItemKind.TRANSFER else note.proof_ids:
            index = self.index_of.get(proof_id)
            if index is None:
                continue
            record = self.records[index]
            if record.commit_ns:
                continue
            record.commit_ns = seen_ns
            record.height = note.height
            if record.expect != workload.Expect.COMMIT:
                self.invalid_committed += 1
                continue
            self.committed += 1
            self.recent.append((seen_ns, seen_ns - record.due_ns))
            self.latency_buckets[latency_bucket((seen_ns - record.due_ns) / 1e9)] += 1
            self.latency_sum_ns += seen_ns - record.due_ns
            if record.reason == RejectReason.ACCEPTED:
                self._settle()

    def _settle(self) -> None:
        self.outstanding -= 1
        room = getattr(self, "_room", None)
        if room is not None:
            room.set()
        if self.outstanding <= 0:
            self.settled.set()

    async def drain(self) -> None:
        """Wait for outstanding commits, at most ``drain_s``: what is left is reported uncommitted."""
        if self.outstanding > 0:
            self.settled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.settled.wait(), self.spec.drain_s)

    def close(self) -> None:
        self._closing = True
        for task in self._redials:
            task.cancel()
        for client in list(self.clients):
            client.close()


async def _report_progress(driver: Driver, report: Report) -> None:
    """Every second: how many went out and committed, the items outstanding, and the p99 commit latency of
    the commits seen in the last ``p99_window_s`` (the status interval: a line then speaks for all of it,
    not for whichever second came last, which in a network committing a block every 2 s often had none)."""
    while True:
        await asyncio.sleep(PROGRESS_EVERY_S)  # the progress period, not a synchronisation
        report("progress", {"sent": driver.sent, "committed": driver.committed, "p99_ms": recent_p99_ms(driver.recent,
                            time.time_ns() - int(driver.spec.p99_window_s * 1e9)), "outstanding": driver.outstanding,
                            "latency_buckets": driver.latency_buckets, "latency_sum_s": driver.latency_sum_ns / 1e9})  # fmt: skip


def recent_p99_ms(recent: deque[tuple[int, int]], since_ns: int) -> float | None:
    """Drop the commits seen before ``since_ns``; the nearest-rank p99 latency of the rest (the report's
    definition too, so live and final p99 agree), or None when none is left."""
    while recent and recent[0][0] < since_ns:
        recent.popleft()
    p99_ns = percentile(sorted(latency for _, latency in recent), 0.99)
    return p99_ns / 1e6 if p99_ns is not None else None


def prepare(spec: DriverSpec) -> list[workload.Planned]:
    keys = workload.owner_keys(spec.seed, spec.index)
    if spec.item_kind == ItemKind.TRANSFER:
        return workload.make_transfer_plan(spec.slots, spec.chain_id, keys, spec.seed * 1000 + spec.index)
    return workload.make_plan(spec.slots, spec.start_ns, spec.chain_id, keys, spec.work_bits, spec.payload_bytes,
                              spec.run_tag, spec.invalid_fraction, spec.invalid_kinds, spec.seed * 1000 + spec.index)  # fmt: skip


async def drive(spec: DriverSpec, report: Report, stop: asyncio.Event, go: asyncio.Future[int]) -> dict[str, Any]:
    """Prepare, wait for the go (the window's start time), connect, send until done or ``stop``, drain.

    Preparation (grinding and signing) happens before the go, while the nodes are still starting, so
    the window measures the network and not the generator. Records are written whatever happened.
    """
    began = time.perf_counter()
    plan = prepare(spec)
    report("prepared", {"proofs": len(plan), "prepare_s": time.perf_counter() - began})
    waiters: set[asyncio.Future[Any]] = {go, asyncio.ensure_future(stop.wait())}
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if not go.done():
        write_records(spec.records_path, [])
        return _summary(spec, plan, Driver(spec, []), interrupted=True)
    spec.start_ns = go.result()
    driver = Driver(spec, plan)
    try:
        await driver.connect()
        report("connected", {"nodes": len(driver.clients)})
        interrupted = await _send_and_drain(driver, report, stop)
    finally:
        driver.close()
        write_records(spec.records_path, driver.records)
    return _summary(spec, plan, driver, interrupted)


async def _send_and_drain(driver: Driver, report: Report, stop: asyncio.Event) -> bool:
    sender = driver.run_closed_loop() if driver.spec.closed_loop_in_flight else driver.run_open_loop()
    progress = asyncio.ensure_future(_report_progress(driver, report))
    sending = asyncio.ensure_future(sender)
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({sending, stopping}, return_when=asyncio.FIRST_COMPLETED)
    interrupted = not sending.done()
    sending.cancel()
    if not interrupted:
        report("sent", {"sent": driver.sent})
        await asyncio.wait({asyncio.ensure_future(driver.drain()), stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    progress.cancel()
    return interrupted


def _summary(spec: DriverSpec, plan: list[workload.Planned], driver: Driver, interrupted: bool) -> dict[str, Any]:
    return {"driver": spec.index, "planned": len(plan), "sent": driver.sent, "interrupted": interrupted,
            "invalid_committed": driver.invalid_committed, "unreachable_nodes": driver.unreachable,
            "records": str(spec.records_path)}  # fmt: skip
