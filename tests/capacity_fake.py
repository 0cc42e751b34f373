"""A fake network with a known capacity curve, for the capacity search, store and model tests.

capacity(N) = scale / N proofs/s (or an override per size), with seeded noise per run. Below its
capacity a run keeps pace with a flat p99; past it the p99 rises steeply, committed/s stays at the
capacity and the share within target falls. CPU per proof follows known model coefficients at the
batch a block interval gives at that rate, so a sweep on the fake can fit the model back.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from harness.capacity.model import Coefficients
from harness.capacity.points import RunKey, RunOutcome, failed_outcome
from harness.kinds import WorkloadMode

TRUE_COEFFICIENTS = Coefficients(
    a_ms_per_proof_per_node=0.12, b_ms_per_block_per_node2=0.05, c_ms_per_block_per_node=2.0, d_ms_per_block=5.0
)
BLOCK_INTERVAL_S = 0.5
MAX_BATCH = 500.0
FLAT_P99_MS = 300.0
P99_MS_PER_OVERLOAD = 40_000.0  # p99 grows by 400 ms per 1 % of load past the capacity


@dataclass
class FakeClock:
    now_s: float = 0.0

    def __call__(self) -> float:
        return self.now_s


@dataclass
class FakeNetwork:
    """A Runner. ``calls`` lists every run it performed; ``interrupt_after`` raises KeyboardInterrupt (Ctrl-C)
    instead of the run after that many; ``broken_from_nodes`` fails every run at that size or above;
    ``crashing_repeat`` crashes a node in every open-loop run with that repeat index; ``stalling_probe``
    makes every closed-loop probe stall for half its window; ``silent_probe_from_nodes`` makes the
    closed-loop probe commit nothing at that size or above (starved by its own load) while open-loop runs work."""

    scale: float = 4000.0
    noise: float = 0.02
    seed: int = 7
    run_s: float = 60.0
    clock: FakeClock = field(default_factory=FakeClock)
    capacity_override: dict[int, float] = field(default_factory=dict)
    interrupt_after: int | None = None
    broken_from_nodes: int | None = None
    crashing_repeat: int | None = None
    stalling_probe: bool = False
    silent_probe_from_nodes: int | None = None
    calls: list[RunKey] = field(default_factory=list)

    def capacity(self, nodes: int) -> float:
        return self.capacity_override.get(nodes, self.scale / nodes)

    def run(self, nodes: int, rate: float, mode: WorkloadMode, repeat_index: int) -> RunOutcome:
        if self.interrupt_after is not None and len(self.calls) >= self.interrupt_after:
            raise KeyboardInterrupt
        key = RunKey(nodes=nodes, rate_per_s=rate, mode=mode, repeat=repeat_index)
        self.calls.append(key)
        self.clock.now_s += self.run_s
        if self.broken_from_nodes is not None and nodes >= self.broken_from_nodes:
            return failed_outcome(key, "nodes never came up", wall_s=self.run_s)
        if mode is WorkloadMode.CLOSED and self.silent_probe_from_nodes is not None and nodes >= self.silent_probe_from_nodes:
            return RunOutcome(key=key, offered_per_s=rate, committed_per_s=0.0, p99_ms=None, within_target_share=0.0, stalled_share=1.0,
                              links_up_min_share=0.0, crashed_nodes=0, wall_s=self.run_s)  # fmt: skip
        draw = random.Random(f"{self.seed}/{nodes}/{rate}/{mode.value}/{repeat_index}")
        capacity = self.capacity(nodes) * (1 + draw.uniform(-self.noise, self.noise))
        offered = capacity * 1.05 if mode is WorkloadMode.CLOSED else rate
        load = offered / capacity
        committed = min(offered, capacity) if mode is WorkloadMode.OPEN else capacity
        batch = min(max(committed * BLOCK_INTERVAL_S, 1.0), MAX_BATCH)
        cpu_ms_per_proof = TRUE_COEFFICIENTS.cpu_ms_per_proof(nodes, batch) * (1 + draw.gauss(0, 0.01))
        return RunOutcome(key=key, offered_per_s=offered, committed_per_s=committed,
                          p99_ms=FLAT_P99_MS * (1 + min(load, 1.0)) + max(load - 1, 0.0) * P99_MS_PER_OVERLOAD,
                          within_target_share=1.0 if load <= 1 else max(0.0, 1 - (load - 1) * 5), stalled_share=0.5 if self.stalling_probe and mode is WorkloadMode.CLOSED else 0.0,
                          links_up_min_share=1.0, crashed_nodes=1 if repeat_index == self.crashing_repeat and mode is WorkloadMode.OPEN else 0,
                          proofs_per_block=batch, cpu_ms_per_proof=cpu_ms_per_proof,
                          cpu_ms_per_block=cpu_ms_per_proof * batch, messages_per_block={"PREPARE": float(nodes * nodes)},
                          wall_s=self.run_s)  # fmt: skip
