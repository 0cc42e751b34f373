"""What a person sees while a run goes: the status line's clock and phase, the drain's backlog, and the
progress lines while a large network forks and connects (harness/observe/progress.py)."""

from __future__ import annotations

from collections import deque

import pytest

from harness.load.drivers import recent_p99_ms
from harness.observe.collect import ProcessSample, Sample
from harness.observe.progress import StatusLine, StepProgress, WindowPhase, phase_at, stale_note
from harness.profile import Run
from tests.test_cost import status

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


def _sample(at_s: float, answered: dict[int, int], alive: set[int]) -> Sample:
    """Nodes in ``answered`` (node -> proofs committed) answered STATUS; ``alive`` are running processes."""
    statuses = {node: status(node, proofs, proofs // 10, {}) for node, proofs in answered.items()}
    processes = {node: ProcessSample(cpu_s=0.0, uss_bytes=None, open_files=1, ctx_switches=0) for node in alive}
    return Sample(WINDOW_START_NS + int(at_s * 1e9), statuses, processes, 0.0)


def test_the_line_says_how_many_nodes_are_alive_and_how_many_answered() -> None:
    printed: list[str] = []
    line = StatusLine(RUN, printed.append)
    window = (WINDOW_START_NS, WINDOW_START_NS + int(RUN.duration_s * 1e9))
    line.on_sample(_sample(11.0, {0: 100, 1: 100, 2: 100}, {0, 1, 2}), window)
    line._last_print = -1e9  # the test does not wait half an interval between lines
    # node 2 is busy past the deadline: alive, not answering, and its count is not lost from the rate
    line.on_sample(_sample(12.0, {0: 200, 1: 190}, {0, 1, 2}), window)
    assert "nodes 3 alive 2 answered" in printed[-1] and "committed 100/s" in printed[-1], printed
    line._last_print = -1e9
    line.on_sample(_sample(13.0, {2: 300}, {0, 1, 2}), window)  # the others are late now: the count carries on
    assert "committed 100/s" in printed[-1] and "height 30" in printed[-1] and "nodes 3 alive 1 answered" in printed[-1]


def test_an_old_driver_report_is_shown_with_its_time() -> None:
    line = StatusLine(RUN, print)
    now_ns = WINDOW_START_NS + 63 * 1_000_000_000
    line.driver_progress("driver-0", {"p99_ms": None, "outstanding": 748, "at_ns": now_ns - 5 * 1_000_000_000})
    assert stale_note(line.outstanding_as_of_ns() or 0, (WINDOW_START_NS, 0), now_ns) == " (as of t+58.0s)"
    assert stale_note(now_ns - 1_000_000_000, (WINDOW_START_NS, 0), now_ns) == ""


def test_a_drivers_p99_covers_the_commits_of_its_whole_window() -> None:
    second = 1_000_000_000
    recent = deque([(0, 900_000_000), (2 * second, 100_000_000), (4 * second, 120_000_000)])
    assert recent_p99_ms(recent, since_ns=1 * second) == pytest.approx(120.0)  # the oldest commit dropped
    assert len(recent) == 2
    assert recent_p99_ms(recent, since_ns=5 * second) is None and not recent  # none in the window: "-"


def test_a_node_restarted_between_two_lines_adds_its_new_cpu_never_a_negative_share() -> None:
    """A wipe restarts node 1 from zero CPU seconds: the chaos run printed `cpu nodes -328%`."""
    printed: list[str] = []
    line = StatusLine(RUN, printed.append)
    window = (WINDOW_START_NS, WINDOW_START_NS + int(RUN.duration_s * 1e9))
    before, after = _sample(11.0, {0: 100, 1: 100}, {0, 1}), _sample(12.0, {0: 200, 1: 190}, {0, 1})
    before.processes[0].cpu_s, before.processes[1].cpu_s = 10.0, 40.0
    after.processes[0].cpu_s, after.processes[1].cpu_s = 10.3, 0.2  # node 1: 0.2 s since its restart
    line.on_sample(before, window)
    line._last_print = -1e9  # the test does not wait half an interval between lines
    line.on_sample(after, window)
    assert "cpu nodes 50%" in printed[-1], printed
