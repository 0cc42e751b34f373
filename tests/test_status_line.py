"""What a person sees while a run goes: the status line's clock and phase, the drain's backlog, and the
progress lines while a large network forks and connects (harness/observe/progress.py)."""

from __future__ import annotations

import pytest

from harness.observe.collect import Sample
from harness.observe.progress import StatusLine, StepProgress, WindowPhase, phase_at
from harness.profile import Run

RUN = Run(duration_s=60.0, warmup_s=10.0, cooldown_s=5.0, status_interval_s=1.0)
WINDOW_START_NS = 1_000_000_000_000


@pytest.mark.parametrize(("since_s", "phase"), [
    (-0.5, WindowPhase.STARTING), (0.0, WindowPhase.WARM_UP), (9.9, WindowPhase.WARM_UP), (10.0, WindowPhase.STEADY),
    (54.9, WindowPhase.STEADY), (55.0, WindowPhase.COOL_DOWN), (60.0, WindowPhase.DRAIN), (75.0, WindowPhase.DRAIN),
])  # fmt: skip
def test_the_phase_follows_the_profiles_window(since_s: float, phase: WindowPhase) -> None:
    assert phase_at(since_s, RUN) is phase


def render_at(line: StatusLine, since_s: float) -> str:
    at_ns = WINDOW_START_NS + int(since_s * 1e9)
    before, now = Sample(at_ns - 1_000_000_000, {}, {}, 0.0), Sample(at_ns, {}, {}, 0.0)
    return line.render(before, now, (WINDOW_START_NS, WINDOW_START_NS + int(RUN.duration_s * 1e9)))


def test_the_status_line_starts_with_elapsed_and_total_time_and_the_phase() -> None:
    line = StatusLine(RUN, print)
    assert render_at(line, 12.0).startswith("t+12.0s/60s  steady  height 0  committed 0/s")
    assert render_at(line, 3.0).startswith("t+3.0s/60s  warm-up  ")


def test_the_drain_shows_the_items_still_outstanding() -> None:
    line = StatusLine(RUN, print)
    line.driver_progress("driver-0", {"sent": 10, "committed": 4, "p99_ms": None, "outstanding": 6})
    line.driver_progress("driver-1", {"sent": 10, "committed": 9, "p99_ms": None, "outstanding": 1})
    assert "outstanding" not in render_at(line, 30.0)  # only the drain says it
    assert render_at(line, 62.0).startswith("t+62.0s/60s  drain  ")
    assert render_at(line, 62.0).endswith("  outstanding 7")


class Clock:
    """A clock the test moves by hand: progress lines depend on elapsed time, the test never waits."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_slow_step_prints_every_tenth_once() -> None:
    printed: list[str] = []
    clock = Clock()
    progress = StepProgress("connected", 100, printed.append, clock)
    for node in range(100):
        clock.now += 0.5  # 50 s for 100 nodes: every tenth is seconds apart
        progress.mark(node)
        progress.mark(node)  # a node that reports twice (a restart) counts once
    assert printed == [f"  connected {k}/100" for k in range(10, 101, 10)]


def test_a_fast_step_prints_no_progress_and_a_throttled_one_still_prints_its_end() -> None:
    printed: list[str] = []
    clock = Clock()
    fast = StepProgress("forked", 400, printed.append, clock)
    for _ in range(400):
        clock.now += 0.001  # all 400 within 0.4 s
        fast.advance()
    assert printed == []
    throttled = StepProgress("listening", 100, printed.append, clock)
    clock.now += 1.5
    throttled.advance(50)  # half the nodes after 1.5 s: printed; the rest at once: only the end
    throttled.advance(50)
    assert printed == ["  listening 50/100", "  listening 100/100"]


def test_a_small_network_prints_no_progress_lines() -> None:
    printed: list[str] = []
    clock = Clock()
    progress = StepProgress("forked", 4, printed.append, clock)
    for _ in range(4):
        clock.now += 10.0
        progress.advance()
    assert printed == [] and progress.count == 4
