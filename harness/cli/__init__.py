"""The popbench command line: run, profiles, report, compare, node, status, join."""
