"""The status line printed each interval during a run: where the network is and how fast it commits.

PoP example: ``t+12.0s  height 153  committed 412/s  p99 180 ms  peers 99.0  nodes up 100  cpu nodes 181%``
- height: the highest committed height among nodes that answered;
- committed/s: proofs committed since the previous line, by the node that committed most, per second;
- p99: the worst per-driver p99 commit latency over the drivers' last progress second;
- peers: mean validator links per answering node; nodes up: nodes that answered STATUS in time;
- cpu nodes: the nodes' summed CPU over the interval (100% = one core).
PoW example: ``t+30.0s  height 41  tips 1  hash rate 1.85 MH/s  work bits 21  stale 2  nodes up 10  cpu nodes 190%``
- tips: distinct tips among the nodes; hash rate: hashes over the interval, all nodes together;
- stale: the most stale (off-main-chain) blocks any one node knows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from harness.observe.collect import Sample
from popbench.wire.status import PowStatus


class StatusLine:
    def __init__(self, interval_s: float, console: Callable[[str], None]) -> None:
        self.interval_s = interval_s
        self.console = console
        self.previous: Sample | None = None
        self.p99_ms: dict[str, float | None] = {}
        self._last_print = 0.0

    def driver_progress(self, driver: str, event: dict[str, Any]) -> None:
        self.p99_ms[driver] = event.get("p99_ms")

    def on_sample(self, sample: Sample, window: tuple[int, int] | None) -> None:
        previous, self.previous = self.previous, sample
        if previous is None or time.monotonic() - self._last_print < self.interval_s * 0.5:
            return
        self._last_print = time.monotonic()
        self.console(self.render(previous, sample, window))

    def render(self, previous: Sample, sample: Sample, window: tuple[int, int] | None) -> str:
        elapsed_s = max(1e-9, (sample.at_ns - previous.at_ns) / 1e9)
        since = (sample.at_ns - window[0]) / 1e9 if window else 0.0
        if any(isinstance(s, PowStatus) for s in sample.statuses.values()):
            return f"t{since:+.1f}s  " + _pow_line(previous, sample, elapsed_s)
        statuses = sample.statuses.values()
        height = max((s.height for s in statuses), default=0)
        rate = (_committed(sample) - _committed(previous)) / elapsed_s
        p99 = max((v for v in self.p99_ms.values() if v is not None), default=None)
        peers = sum(s.peers for s in statuses) / len(statuses) if statuses else 0.0
        cpu = _cpu_delta(previous, sample) / elapsed_s * 100
        p99_text = f"{p99:,.0f} ms" if p99 is not None else "-"
        return (f"t{since:+.1f}s  height {height}  committed {rate:,.0f}/s  p99 {p99_text}  "
                f"peers {peers:.1f}  nodes up {len(sample.statuses)}  cpu nodes {cpu:.0f}%")  # fmt: skip


def _pow_line(previous: Sample, sample: Sample, elapsed_s: float) -> str:
    """PoW: tip height, distinct tips, network hash rate over the interval, stale blocks, CPU."""
    sections = [s.pow for s in sample.statuses.values() if isinstance(s, PowStatus)]
    before = sum(s.pow.hashes for s in previous.statuses.values() if isinstance(s, PowStatus))
    rate = (sum(p.hashes for p in sections) - before) / elapsed_s
    cpu = _cpu_delta(previous, sample) / elapsed_s * 100
    return (f"height {max(p.height for p in sections)}  tips {len({p.tip_hash for p in sections})}  "
            f"hash rate {rate / 1e6:,.2f} MH/s  work bits {max(p.work_bits for p in sections)}  "
            f"stale {max(p.stale_blocks for p in sections)}  nodes up {len(sections)}  cpu nodes {cpu:.0f}%")  # fmt: skip


def _committed(sample: Sample) -> int:
    return max((s.counters.proofs_committed for s in sample.statuses.values()), default=0)


def _cpu_delta(previous: Sample, sample: Sample) -> float:
    return sum(p.cpu_s - previous.processes[n].cpu_s for n, p in sample.processes.items() if n in previous.processes)
