"""Mining metrics: the PoP miners' hash rate and efficiency, and (for PoW runs) the chain's behaviour.

Hash-rate efficiency compares the miners' hashes with the calibrated raw sha256 midstate rate of one
core (measured at the start of the run): per CPU-second the miners actually got (``hash_efficiency``,
the score's figure: how close the mining loop runs to the raw speed of the core), and per wall-second
over the cores the miners could use (``wall_efficiency``, which also shows the CPU they lost to the
nodes on a shared host). Definitions: docs/metrics.md, "Mining and proof-of-work".
"""

from __future__ import annotations

from typing import Any

from harness.metrics.results import PopMining
from harness.stats import percentile


def pop_mining(summaries: list[dict[str, Any]], hashes_per_s_per_core: float, cores_for_miners: int) -> PopMining:
    """``summaries`` are the miners' own "done" events (a dict per miner, ``missing`` when one never said)."""
    done = [s for s in summaries if not s.get("missing")]
    hashes = sum(s["hashes"] for s in done)
    cpu_s = sum(s["cpu_s"] for s in done)
    wall_s = max((s["wall_s"] for s in done), default=0.0)
    rate = hashes / wall_s if wall_s > 0 else 0.0
    latencies = sorted(v for s in done for v in s.get("commit_latency_ms", []))
    return PopMining(
        miners=len(summaries), miners_reporting=len(done),
        hash_rate_total=rate,
        hash_rate_per_miner=[s["hashes_per_s"] for s in done],
        hash_efficiency=hashes / (cpu_s * hashes_per_s_per_core) if cpu_s > 0 and hashes_per_s_per_core else None,
        wall_efficiency=rate / (hashes_per_s_per_core * cores_for_miners) if hashes_per_s_per_core and cores_for_miners else None,
        proofs_found=sum(s["found"] for s in done), proofs_accepted=sum(s["accepted"] for s in done),
        proofs_rejected=sum(s["rejected"] for s in done), proofs_committed=sum(s["committed"] for s in done),
        mined_commit_latency_p50_ms=percentile(latencies, 0.5),
        mined_commit_latency_p99_ms=percentile(latencies, 0.99),
    )  # fmt: skip
