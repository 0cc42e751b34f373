"""Regression detection: did this commit make the network slower or heavier?

- :mod:`.figures`: the watched figures, each with a unit, a direction and a threshold.
- :mod:`.stats`: the spread of one figure across repeats and the two-sample test (Mann-Whitney U).
- :mod:`.verdict`: typed per-figure and whole comparisons, the like-for-like check, the exit status.
- :mod:`.render`: the comparison as a terminal table, JSON and Markdown (``$GITHUB_STEP_SUMMARY``).
- :mod:`.baselines`: repeat sets saved as small versioned JSON under ``reports/baselines/<name>/``.
- :mod:`.pyperf_export`: a repeat set as a pyperf BenchmarkSuite file for ``python -m pyperf``.

The package never reads a report itself: callers hand it samples (one value per whole run) and a
:class:`~harness.regress.verdict.RunMetadata`. The method is described in docs/regression.md.
"""
