"""``popbench monitor``: the live terminal dashboard of a running network (docs/monitoring.md)."""
