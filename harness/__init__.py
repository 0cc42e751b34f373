"""The popbench harness: supervisor, load, faults, metrics, scoring, reports and the CLI."""
