"""`popbench compare BASE NEW` and `popbench baseline save|list`: the regression check (docs/regression.md).

Exit status of `popbench compare`: 0 no significant regression; 1 a gating figure is significantly worse
beyond its threshold, or (too few runs for a test) beyond its fixed tolerance; 2 the two sides are not like
for like (unless --force), or bad input; 3 inconclusive: a gating figure could not be tested with these
sample sizes and moved within its fixed tolerance (0 with --accept-inconclusive, still saying so).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from harness.cli.numeric import number
from harness.regress.baselines import BASELINES_ENV, default_baselines_dir, list_baselines, make_baseline, save_baseline
from harness.regress.figures import WATCHED_FIGURES
from harness.regress.render import append_step_summary, render_json, render_markdown, render_table
from harness.regress.stats import ALPHA
from harness.regress.verdict import compare_repeat_sets
from harness.report.compare import LoadedSide, load_runs, load_side

BASELINES_DIR_HELP = (
    f"Where baselines live (default: ${BASELINES_ENV}, else reports/baselines at the root of the checkout holding the working directory)."
)
baselines_dir_option = click.option("--baselines-dir", type=click.Path(file_okay=False, path_type=Path), help=BASELINES_DIR_HELP)


def register(group: click.Group) -> None:
    group.add_command(compare_command)
    group.add_command(baseline_group)


@click.command("compare")
@click.argument("sides", nargs=-1, required=True, metavar="[BASE] NEW")
@click.option("--baseline", "baseline_name", help="Compare NEW against this saved baseline (BASE is then left out).")
@click.option("--force", is_flag=True, help="Compare even when the two sides are not like for like.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole comparison as JSON.")
@click.option("--markdown", is_flag=True, help="Print it as GitHub-flavoured Markdown.")
@click.option("--accept-inconclusive", is_flag=True,
              help="Exit 0, not 3, when too few runs for a test left a gating figure untested (the outcome still says inconclusive).")  # fmt: skip
@click.option("--alpha", type=number(0.0, 1.0, low_open=True, high_open=True), default=ALPHA, show_default=True,
              help="Significance level of the Mann-Whitney U test, in (0, 1).")  # fmt: skip
@baselines_dir_option
def compare_command(
    sides: tuple[str, ...], baseline_name: str | None, force: bool, as_json: bool, markdown: bool, accept_inconclusive: bool,
    alpha: float, baselines_dir: Path | None,
) -> None:  # fmt: skip
    """Compare NEW with BASE, each a run directory, a directory of repeats or a baseline name.

    Appends the Markdown table to $GITHUB_STEP_SUMMARY when it is set.
    """
    if as_json and markdown:
        raise click.UsageError("choose one of --json and --markdown")
    base_name, new_name = _side_names(sides, baseline_name)
    base, new = load_side(base_name, baselines_dir), load_side(new_name, baselines_dir)
    for note in _notes(base, new):
        click.echo(f"note: {note}", err=True)
    comparison = compare_repeat_sets(base.repeat_set, new.repeat_set, WATCHED_FIGURES, alpha=alpha, force=force,
                                     accept_inconclusive=accept_inconclusive, labels=(base.label, new.label))  # fmt: skip
    if as_json:
        sys.stdout.buffer.write(render_json(comparison))
        sys.stdout.flush()
        click.echo(render_table(comparison).splitlines()[-1], err=True)  # the outcome line, for the log
    elif markdown:
        click.echo(render_markdown(comparison), nl=False)  # it ends with its own newline
    else:
        click.echo(render_table(comparison))
    append_step_summary(render_markdown(comparison))
    sys.exit(int(comparison.exit_status))


def _side_names(sides: tuple[str, ...], baseline_name: str | None) -> tuple[str, str]:
    if baseline_name is not None:
        if len(sides) != 1:
            raise click.UsageError("with --baseline NAME, give only NEW")
        return baseline_name, sides[0]
    if len(sides) != 2:
        raise click.UsageError("give BASE and NEW (or --baseline NAME and NEW)")
    return sides[0], sides[1]


def _notes(base: LoadedSide, new: LoadedSide) -> list[str]:
    return [f"{side.label}: left out {why}" for side in (base, new) for why in side.left_out] + base.notes + new.notes


# -- baselines ---------------------------------------------------------------------------------------
@click.group("baseline")
def baseline_group() -> None:
    """Save a repeat set as a named baseline, or list the saved ones (reports/baselines/ at the checkout's root)."""


@baseline_group.command("save")
@click.argument("name")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--note", default="", help="A line kept with the baseline (why it was taken).")
@baselines_dir_option
def baseline_save(name: str, directory: Path, note: str, baselines_dir: Path | None) -> None:
    """Save the complete runs under DIRECTORY (a run or a repeat set) as baseline NAME."""
    side = load_runs(directory)
    for why in side.left_out:
        click.echo(f"note: left out {why}", err=True)
    path = save_baseline(make_baseline(name, side.repeat_set, note=note), baselines_dir)
    click.echo(f"saved baseline {name}: {len(side.repeat_set.run_ids)} runs of profile {side.repeat_set.metadata.profile} -> {path}")


@baseline_group.command("list")
@baselines_dir_option
def baseline_list(baselines_dir: Path | None) -> None:
    """The saved baselines: name, runs, profile, commit, when."""
    directory = baselines_dir or default_baselines_dir()
    found = list_baselines(directory)
    if not found:
        click.echo(f"no baselines under {directory}")
    for info in found:
        click.echo(f"{info.name:<24} {info.runs:>3} runs  {info.profile:<16} {(info.git_commit or '?')[:12]:<12} {info.created_at}")
