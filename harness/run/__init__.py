"""One run's phases, its RunData, and the faults it applies."""
