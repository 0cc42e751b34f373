"""A repeat set as a pyperf BenchmarkSuite file, so pyperf's own tools read popbench results:

    python -m pyperf stats FILE.json          # mean, median, spread of each figure across repeats
    python -m pyperf hist FILE.json
    python -m pyperf compare_to BASE.json NEW.json

One pyperf benchmark per watched figure, one pyperf run per popbench repeat, one value per run (a whole
run is one sample). pyperf knows three units: times (CPU-ms, latencies) are written in seconds, bytes as
bytes, every other count as a plain number. pyperf calls a larger value "slower"; for a figure where
higher is better (committed proofs/s) read its "slower" as "better" (the file's metadata says which).
pyperf refuses values <= 0, so a figure with such a sample is left out and named in the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import msgspec
import pyperf

from harness.regress.figures import WATCHED_FIGURES, FigureSpec
from harness.regress.verdict import RepeatSet, RunMetadata, SkippedFigure
from popbench.errors import HarnessError

# popbench unit -> (pyperf unit, factor to pyperf's unit)
PYPERF_UNITS: dict[str, tuple[str, float]] = {"ms": ("second", 1e-3), "s": ("second", 1.0), "bytes": ("byte", 1.0)}
PLAIN_NUMBER = ("integer", 1.0)  # pyperf's name for a unitless number; it prints floats as they are


class PyperfExport(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    path: str
    benchmarks: list[str]
    skipped: list[SkippedFigure]


def pyperf_unit(unit: str) -> tuple[str, float]:
    return PYPERF_UNITS.get(unit, PLAIN_NUMBER)


def _common_metadata(spec: FigureSpec, metadata: RunMetadata) -> dict[str, str | int | float]:
    unit, _ = pyperf_unit(spec.unit)
    common: dict[str, str | int | float] = {
        "name": spec.name, "unit": unit, "loops": 1, "popbench_label": spec.label, "popbench_unit": spec.unit,
        "popbench_direction": spec.direction.value, "popbench_profile": metadata.profile,
    }  # fmt: skip
    known = {"cpu_model_name": metadata.cpu_model, "cpu_count": metadata.cores_logical, "popbench_commit": metadata.git_commit}
    common.update({key: value for key, value in known.items() if value not in (None, "")})
    return common


def figure_benchmark(spec: FigureSpec, samples: Sequence[float], metadata: RunMetadata, run_ids: Sequence[str]) -> object:
    """One pyperf.Benchmark: a run per repeat; ``collect_metadata=False`` because this host's state is not
    the measured host's."""
    _, factor = pyperf_unit(spec.unit)
    common = _common_metadata(spec, metadata)
    runs = [
        pyperf.Run([value * factor], metadata={**common, "popbench_run_id": run_id}, collect_metadata=False)
        for value, run_id in zip(samples, _run_labels(run_ids, len(samples)), strict=True)
    ]
    return pyperf.Benchmark(runs)


def _run_labels(run_ids: Sequence[str], count: int) -> list[str]:
    # a figure some runs did not measure has fewer samples than runs, and which run gave which is not kept
    return list(run_ids) if len(run_ids) == count else [f"repeat-{index + 1}" for index in range(count)]


def export_pyperf_suite(repeat_set: RepeatSet, path: Path, specs: Sequence[FigureSpec] = WATCHED_FIGURES) -> PyperfExport:
    """Write ``path`` (``.json``, or ``.json.gz`` compressed) with every figure pyperf can hold."""
    benchmarks, names, skipped = [], [], []
    for spec in specs:
        samples = repeat_set.samples.get(spec.name)
        if not samples:
            skipped.append(SkippedFigure(name=spec.name, reason="not measured"))
        elif min(samples) <= 0:
            skipped.append(SkippedFigure(name=spec.name, reason=f"pyperf needs values > 0, got {min(samples):g}"))
        else:
            benchmarks.append(figure_benchmark(spec, samples, repeat_set.metadata, repeat_set.run_ids))
            names.append(spec.name)
    if not benchmarks:
        raise HarnessError(f"{path}: no figure to export ({'; '.join(f'{s.name}: {s.reason}' for s in skipped)})")
    path.parent.mkdir(parents=True, exist_ok=True)
    pyperf.BenchmarkSuite(benchmarks).dump(str(path), replace=True)
    return PyperfExport(path=str(path), benchmarks=names, skipped=skipped)
