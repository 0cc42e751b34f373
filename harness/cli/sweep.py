"""`popbench sweep`: how many validators this host carries, at what rate and latency (docs/capacity.md).

Searches a profile over node counts (real runs, one ``popbench run`` each), keeps DIR/sweep.json
current after every run, fits the CPU cost model, and writes DIR/sweep.html. Exit status: 0 the search
ended (complete, or stopped by its budget: the table says so); 2 bad input; 130 interrupted (what
finished is kept: ``--resume`` continues).
"""

from __future__ import annotations

import signal
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import click

from harness.capacity.model import (
    DeploymentPlan,
    MeasuredCapacities,
    ModelError,
    Validation,
    VoteGrowth,
    observations_from_runs,
    plan_deployment,
    validate_held_out,
)
from harness.capacity.points import Runner, RunOutcome, slo_from_profile
from harness.capacity.render import points_table, terminal_report
from harness.capacity.runner import ProcessRunner, RunSettings
from harness.capacity.search import Budget, Progress, SearchPlan, SizeStatus, format_duration
from harness.capacity.store import SWEEP_FILE, Sweep, load_sweep
from harness.capacity.sweep import run_sweep, write_page
from harness.cli.numeric import integer, positive, profile_key
from harness.host.envinfo import usable_cores
from harness.kinds import WorkloadMode
from harness.profile import Profile, apply_overrides, load_profile, scaling_note
from popbench.errors import ConfigError

EXIT_INTERRUPTED = 130
PROBE = "probe"
MEASURED_STATUSES = (SizeStatus.FOUND, SizeStatus.GRID)  # a capacity, not a bound, for the held-out validation
# A key of the plan (sweep.<key> in a ConfigError) -> the flag that sets it, so bad input names the flag.
FLAG_OF_KEY = {"sizes": "--nodes", "rates": "--rates", "tolerance": "--tolerance", "repeats": "--repeats",
               "min_sustained_repeats": "--min-sustained", "probe_rate_per_s": "--probe-rate"}  # fmt: skip

# The seam: how a runner is made for a sweep (the real one forks `popbench run`; tests pass a fake).
RunnerFactory = Callable[[RunSettings, Path, Callable[[str], None]], Runner]


def process_runner(settings: RunSettings, output: Path, console: Callable[[str], None]) -> Runner:
    return ProcessRunner(settings, output, console=console)


def register(group: click.Group) -> None:
    group.add_command(make_sweep_command(process_runner))


@dataclass
class AnnouncingRunner:
    """Says which run starts and about how long it takes, then runs it (the progress line follows it)."""

    runner: Runner
    walls_s: list[float] = field(default_factory=list)

    def run(self, nodes: int, rate: float, mode: WorkloadMode, repeat_index: int) -> RunOutcome:
        about = f" (a run takes about {format_duration(statistics.fmean(self.walls_s))})" if self.walls_s else ""
        click.echo(f"  running N={nodes} {mode.value} {rate:g}/s #{repeat_index}{about}")
        began = time.monotonic()
        outcome = self.runner.run(nodes, rate, mode, repeat_index)
        self.walls_s.append(time.monotonic() - began)
        return outcome


def make_sweep_command(runner_factory: RunnerFactory) -> click.Command:
    """The ``sweep`` command performing its runs with runners from ``runner_factory``."""

    @click.command("sweep")
    @click.option(
        "--profile", "profile_name", required=True, help="Profile name in profiles/ or a TOML path; its [slo] is the service level."
    )
    @click.option("--nodes", "sizes", required=True, callback=_sizes, help="Node counts, comma-separated: 4,8,16.")
    @click.option("--rates", default=PROBE, show_default=True, callback=_rates,
                  help="'probe': probe, bracket and bisect per size; or open-loop rates to run at every size: 50,100,200.")  # fmt: skip
    @click.option("--target-rate", type=positive(), help="Also find the largest size that sustains this rate (proofs/s).")
    @click.option("--repeats", type=integer(1), default=1, show_default=True, help="Runs per rate; each repeat has its own seed.")
    @click.option("--min-sustained", type=integer(1), help="Repeats that must sustain a rate (default: all).")
    @click.option(
        "--tolerance",
        type=positive(),
        default=0.10,
        show_default=True,
        help="Bisect until the failing rate is within this of the sustained one.",
    )
    @click.option("--probe-rate", type=positive(), default=5000.0, show_default=True,
                  help="Closed-loop probe: sizes its pool of pre-signed proofs (rate x duration) and its in-flight count.")  # fmt: skip
    @click.option(
        "--duration", "duration_s", type=profile_key("run.duration_s"), help="Load window of every run, seconds (default: the profile's)."
    )
    @click.option("--seed", type=profile_key("run.seed"), help="Base seed; repeat k runs with seed + k (default: the profile's).")
    @click.option("--max-minutes", type=positive(), help="Budget: perform no run that would end after this many minutes.")
    @click.option("--max-runs", type=integer(1), help="Budget: perform at most this many runs (stored runs replayed by --resume are free).")
    @click.option("--resume", is_flag=True, help="Continue the sweep stored in --output (same settings).")
    @click.option("--votes", type=click.Choice([g.value for g in VoteGrowth]), default=VoteGrowth.QUADRATIC.value, show_default=True,
                  help="Cost model: how vote work grows with N (quadratic: PBFT all-to-all).")  # fmt: skip
    @click.option("--fit-max-nodes", type=integer(1), help="Validate the model: fit on N <= this, predict the larger sizes measured.")
    @click.option(
        "--plan", "plans", default="", callback=_plans, help="Planner questions, N@R comma-separated: 1000@10 (validators @ proofs/s)."
    )
    @click.option("--plan-batch", type=positive(), help="Planner: proofs per block to assume (default: the median of the fitted runs).")
    @click.option("--cores-per-host", type=integer(1), help="Planner: cores of a host (default: the cores this process may use).")
    @click.option("--output", required=True, type=click.Path(path_type=Path), help="Sweep directory: sweep.json, sweep.html, runs/.")
    def sweep_command(profile_name: str, sizes: list[int], rates: list[float], target_rate: float | None, repeats: int,
                      min_sustained: int | None, tolerance: float, probe_rate: float, duration_s: float | None, seed: int | None,
                      max_minutes: float | None, max_runs: int | None, resume: bool, votes: str, fit_max_nodes: int | None,
                      plans: list[tuple[int, float]], plan_batch: float | None, cores_per_host: int | None, output: Path) -> None:  # fmt: skip
        """Find the highest rate each size sustains within the profile's service level, and the largest size for a rate."""
        profile = _profile(profile_name, duration_s, sizes)
        settings = RunSettings(profile=profile_name, duration_s=duration_s, seed=seed)
        plan = _search_plan(sizes=sizes, rates=rates, target_rate_per_s=target_rate, repeats=repeats, min_sustained_repeats=min_sustained,
                            tolerance=tolerance, probe_rate_per_s=probe_rate, run_settings=settings.describe())  # fmt: skip
        after = Afterwards(cores=cores_per_host or usable_cores(), fit_max_nodes=fit_max_nodes, questions=plans, batch=plan_batch)
        budget = Budget(max_minutes=max_minutes, max_runs=max_runs)
        runner = AnnouncingRunner(runner_factory(settings, output, click.echo))
        click.echo(f"popbench sweep: profile {profile.name}, N = {', '.join(map(str, sizes))}, "
                   f"{'rates ' + ', '.join(f'{r:g}' for r in rates) if rates else 'probe, bracket and bisect'}; output {output}")  # fmt: skip
        previous = signal.signal(signal.SIGTERM, _terminated)  # a CI timeout's SIGTERM stops the sweep as Ctrl-C does
        try:
            sweep = run_sweep(output, plan, slo_from_profile(profile.slo), runner, resume=resume, budget=budget,
                              growth=VoteGrowth(votes), progress=_show_progress)  # fmt: skip
        except KeyboardInterrupt:
            if not (output / SWEEP_FILE).exists():
                raise SystemExit(EXIT_INTERRUPTED) from None
            sweep = load_sweep(output / SWEEP_FILE)
            _conclude(output, sweep, after)
            click.echo(f"\ninterrupted: {len(sweep.records())} runs kept in {output / SWEEP_FILE}; continue with --resume", err=True)
            raise SystemExit(EXIT_INTERRUPTED) from None
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
        _conclude(output, sweep, after)

    return sweep_command


@dataclass(frozen=True)
class Afterwards:
    """What the command does with a sweep once its search ended: validate the model, answer the planner."""

    cores: int  # this host's, or --cores-per-host
    fit_max_nodes: int | None
    questions: list[tuple[int, float]]  # --plan: (validators, proofs/s)
    batch: float | None  # --plan-batch


def _conclude(output: Path, sweep: Sweep, after: Afterwards) -> None:
    """Validation and planner answers, the tables on the terminal, and sweep.html."""
    validation = _validation(sweep, after.cores, after.fit_max_nodes)
    plans = _plans_for(sweep, after)
    click.echo("\n" + points_table(sweep))
    click.echo("\n" + terminal_report(sweep, plans, validation))
    page = write_page(output, sweep, after.cores, plans, validation)
    click.echo(f"\nsweep: {output / SWEEP_FILE}  page: {page}")


def _validation(sweep: Sweep, cores: int, fit_max_nodes: int | None) -> Validation | None:
    if fit_max_nodes is None:
        return None
    measured = MeasuredCapacities(
        per_size={c.nodes: c.sustained_rate_per_s for c in sweep.findings.capacities
                  if c.status in MEASURED_STATUSES and c.sustained_rate_per_s is not None},
        cores=cores,
        none_sustained=[c.nodes for c in sweep.findings.capacities if c.status is SizeStatus.NONE_SUSTAINED],
    )  # fmt: skip
    observations = observations_from_runs(sweep.records())
    if not any(o.nodes > fit_max_nodes for o in observations):
        click.echo(f"held-out validation: no sustained run with CPU counters above N = {fit_max_nodes} to predict", err=True)
        return None
    try:
        return validate_held_out(observations, fit_max_nodes, sweep.model.growth if sweep.model else VoteGrowth.QUADRATIC, measured)
    except ModelError as err:
        click.echo(f"held-out validation (fit on N <= {fit_max_nodes}): not possible: {err}", err=True)
        return None


def _plans_for(sweep: Sweep, after: Afterwards) -> list[DeploymentPlan]:
    model = sweep.model
    if model is None:
        if after.questions:
            click.echo("planner: no answer: the cost model could not be fitted (too few sustained runs with CPU counters)", err=True)
        return []
    return [plan_deployment(model, nodes, rate, after.cores, proofs_per_block=after.batch) for nodes, rate in after.questions]


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _show_progress(progress: Progress) -> None:
    click.echo(progress.line())


# -- input ------------------------------------------------------------------------------------------------
def _profile(name: str, duration_s: float | None, sizes: list[int]) -> Profile:
    """The profile, and with --duration its window as every run will have it (scaled like `popbench run`'s);
    every size is checked against it (a fault on node 5 cannot run at N = 4)."""
    try:
        profile = load_profile(name)
    except ConfigError as err:
        raise click.BadParameter(str(err), param_hint="--profile") from err
    try:
        scaled = apply_overrides(profile, duration_s=duration_s)
    except ConfigError as err:
        raise click.BadParameter(str(err), param_hint="--duration") from err
    for nodes in sizes:
        try:
            apply_overrides(scaled, nodes=nodes)
        except ConfigError as err:
            raise click.BadParameter(f"N = {nodes}: {err}", param_hint="--nodes") from err
    note = scaling_note(profile.run, scaled.run)
    if note:
        click.echo(f"every run: {note}")
    return scaled


def _search_plan(**fields: object) -> SearchPlan:
    try:
        return SearchPlan(**fields)  # type: ignore[arg-type]
    except ConfigError as err:
        key = (err.key or "").removeprefix("sweep.")
        raise click.BadParameter(str(err), param_hint=FLAG_OF_KEY.get(key, key)) from err


# The items of the comma-separated options, parsed and bounded as a single numeric option is.
NODE_COUNT, RATE = profile_key("network.nodes"), positive()


def _sizes(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    sizes = [int(NODE_COUNT.convert(part, param, ctx)) for part in _parts(value)]
    if not sizes:
        raise click.BadParameter(f"node counts, comma-separated: {value!r}")
    return sizes


def _rates(ctx: click.Context, param: click.Parameter, value: str) -> list[float]:
    if value.strip() == PROBE:
        return []
    rates = [float(RATE.convert(part, param, ctx)) for part in _parts(value)]
    if not rates:
        raise click.BadParameter(f"positive proofs/s, comma-separated, or '{PROBE}': {value!r}")
    return rates


def _plans(ctx: click.Context, param: click.Parameter, value: str) -> list[tuple[int, float]]:
    questions = []
    for part in _parts(value):
        nodes, at, rate = part.partition("@")
        if not at:
            raise click.BadParameter(f"{part!r} is not N@R (validators@proofs/s), e.g. 1000@10")
        questions.append((int(NODE_COUNT.convert(nodes.strip(), param, ctx)), float(RATE.convert(rate.strip(), param, ctx))))
    return questions


def _parts(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]
