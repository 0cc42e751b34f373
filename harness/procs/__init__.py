"""Child processes: fork, readiness, no orphans (docs/supervisor.md)."""
