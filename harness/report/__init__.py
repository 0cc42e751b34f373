"""The report: build, score, render and compare."""
