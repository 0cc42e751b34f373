"""One sweep from start to files: open or resume sweep.json, search, fit the model, write sweep.html.

``popbench sweep`` supplies the runner (real runs) and prints progress; everything else is here.
Ctrl-C (KeyboardInterrupt, raised in the runner) marks the file interrupted and propagates: every run
that finished is already on disk, and ``--resume`` continues from them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from harness.capacity.model import CostModel, DeploymentPlan, ModelError, Validation, VoteGrowth, fit_cost_model, observations_from_runs
from harness.capacity.points import Runner, Slo
from harness.capacity.render import html_page
from harness.capacity.search import Budget, CapacitySearch, Progress, SearchPlan
from harness.capacity.store import SWEEP_FILE, Sweep, SweepStatus, SweepStore, write_atomically

PAGE_FILE = "sweep.html"


def run_sweep(output: Path, plan: SearchPlan, slo: Slo, runner: Runner, *, resume: bool = False, budget: Budget | None = None,
              growth: VoteGrowth = VoteGrowth.QUADRATIC, clock: Callable[[], float] = time.monotonic,
              progress: Callable[[Progress], None] | None = None) -> Sweep:  # fmt: skip
    """Search ``plan`` with ``runner``, keeping ``output``/sweep.json current after every run."""
    path = output / SWEEP_FILE
    store = SweepStore.resume(path, plan, slo) if resume else SweepStore.create(path, plan, slo)
    search = CapacitySearch(plan, slo, runner, store, budget, clock, progress)
    try:
        findings = search.run()
    except KeyboardInterrupt:
        store.finish(SweepStatus.INTERRUPTED)
        raise
    status = SweepStatus.BUDGET if findings.stopped else SweepStatus.COMPLETE
    return store.finish(status, fit_model(store.snapshot(), growth))


def fit_model(sweep: Sweep, growth: VoteGrowth = VoteGrowth.QUADRATIC) -> CostModel | None:
    """The cost model of the sweep's sustained runs, or None when they are too few to fit it."""
    try:
        return fit_cost_model(observations_from_runs(sweep.records()), growth)
    except ModelError:
        return None


def write_page(output: Path, sweep: Sweep, cores: float, plans: list[DeploymentPlan] | None = None,
               validation: Validation | None = None) -> Path:  # fmt: skip
    """sweep.html beside sweep.json (atomically, like it)."""
    path = output / PAGE_FILE
    write_atomically(path, html_page(sweep, cores, plans, validation).encode())
    return path
