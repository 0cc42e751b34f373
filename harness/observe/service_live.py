"""``service-live.json`` in a run directory: what the run's drivers said last, for ``popbench monitor
RUN_DIR`` to judge the service level while the run goes (docs/monitoring.md, "Service level now").

The nodes' STATUS says nothing about an item's commit latency: only the drivers see it (each sent item's
due time against its commit). The run rewrites this small file at every collector sample from the
drivers' latest progress reports (once a second each): their p99 over the last status interval, what
they sent and saw committed so far, and the profile's service level. Rewritten whole and renamed into
place, so a reader never sees half of it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgspec

from harness.observe.collect import Sample
from harness.observe.progress import StatusLine
from harness.profile import Slo

SERVICE_FILE = "service-live.json"


class ServiceLive(msgspec.Struct, frozen=True, kw_only=True):
    at_ns: int  # when the run wrote it (its latest sample)
    drivers: int  # drivers that have reported
    p99_ms: float | None  # the worst driver's p99 over the last status interval (None: no commit in it)
    sent: int  # items the drivers sent so far, all together
    committed: int  # of them, seen committed
    outstanding: int
    latency_target_ms: float
    within_share: float
    min_delivery: float
    min_links_share: float


def service_live(line: StatusLine, slo: Slo, at_ns: int) -> ServiceLive:
    """The drivers' latest figures as the status line holds them, with the profile's service level."""
    drivers = line.drivers.values()
    p99s = [d.p99_ms for d in drivers if d.p99_ms is not None]
    return ServiceLive(at_ns=at_ns, drivers=len(line.drivers), p99_ms=max(p99s) if p99s else None,
                       sent=sum(d.sent for d in drivers), committed=sum(d.committed for d in drivers),
                       outstanding=line.outstanding, latency_target_ms=slo.latency_ms, within_share=slo.within_share,
                       min_delivery=slo.min_delivery, min_links_share=slo.min_links_share)  # fmt: skip


def service_writer(run_dir: Path, line: StatusLine, slo: Slo) -> Callable[[Sample], None]:
    """A collector listener that rewrites ``service-live.json`` from the status line's driver reports."""
    path = run_dir / SERVICE_FILE
    partial = path.with_suffix(".tmp")

    def write(sample: Sample) -> None:
        content = service_live(line, slo, sample.at_ns)
        try:
            partial.write_bytes(msgspec.json.encode(content))
            partial.replace(path)
        except OSError:
            pass  # a full disk must not stop the run: the monitor then judges without the drivers

    return write


def read_service_live(run_dir: Path) -> ServiceLive | None:
    """The run's latest drivers' figures; None when there are none (yet), or the file cannot be read."""
    try:
        return msgspec.json.decode((run_dir / SERVICE_FILE).read_bytes(), type=ServiceLive)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None
