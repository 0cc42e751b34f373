"""Consensus engines: PBFT for the PoP network, proof-of-work for Antimony."""
