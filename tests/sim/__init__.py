"""Deterministic simulation of the real PBFT engine (FoundationDB's simulation, Jepsen's checkers).

- ``network``: virtual time, the event queue, in-memory hosts around real engines and ledgers.
- ``scheduler``: the seeded adversary (delays, reordering, drops, partitions, early and late timers).
- ``byzantine``: up to f faulty replicas, each with a behaviour that tampers with what it sends.
- ``invariants``: agreement, validity and certificates after every step; liveness once stable.
- ``runner``: one schedule from one integer seed, and the failure that names how to replay it.

Everything a schedule does follows from its seed: one ``random.Random``, no wall clock, no threads,
no asyncio loop, and every iteration in node order.
"""
