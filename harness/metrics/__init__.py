"""Every metric of a run, computed from its RunData afterwards (docs/metrics.md)."""
