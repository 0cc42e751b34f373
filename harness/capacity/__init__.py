"""Capacity planning: how many validators this host carries, at what rate and latency (docs/capacity.md).

``points`` (one run and its verdict), ``search`` (probe, bracket, bisect, verify), ``store`` (sweep.json,
resume), ``model`` (the CPU cost model and the planner), ``plots`` and ``render`` (terminal and HTML),
``sweep`` (ties them together for ``popbench sweep``). Only ``runner`` knows how a run is performed (one
``popbench run`` child per point, read back from its report.json); the rest takes any ``Runner``.
"""
