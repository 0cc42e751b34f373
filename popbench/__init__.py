"""popbench: a real Proof-of-Proof (PBFT) and proof-of-work network, built to be benchmarked."""

__version__ = "0.1.0"
