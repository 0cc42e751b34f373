"""Run profiles: TOML files in profiles/, validated at the edge, overridable from the command line.

Every key is declared once, in the section dataclasses below (with its default, and a numeric key with
the range it accepts: :class:`Bound`). An unknown key or a bad value is refused with ConfigError naming
the file and the dotted key; the command-line flags that override a key take their range from the same
declaration (harness/cli/numeric.py), so a flag and its key refuse the same values. Reference:
docs/profiles.md.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from harness.kinds import DiskMode, FaultKind, FaultMechanism, InvalidKind, LeaderRotation, LoadShape, Topology, WorkloadMode
from popbench.errors import ConfigError
from popbench.kinds import COLLECTOR_FAULTS, ByzantineBehaviour, ConsensusKind, CryptoBackend, VotePath, values
from popbench.model.proof import MAX_PAYLOAD_BYTES

PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"
BYZANTINE_KINDS = tuple(values(ByzantineBehaviour))
STEADY_SHARE_MIN = 0.5  # --duration: warm-up and cool-down shrink so the steady part is at least this share
BOUND_KEY = "bound"  # where a numeric key's Bound sits in its dataclass field's metadata
T = TypeVar("T")


@dataclass(frozen=True)
class Bound:
    """The values a numeric key (or each item of a numeric list) accepts: finite, and within ``low`` and
    ``high`` (inclusive unless open; None: no limit that way)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def problem(self, value: float) -> str | None:
        """Why ``value`` is refused, or None. Not-a-number compares false with everything, so it is
        refused first: a range test alone would let ``nan`` (and ``inf`` below an open top) through."""
        if not math.isfinite(value):
            return f"must be a finite number, got {value}"
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        return f"must be {self.describe()}, got {_shown(value)}" if too_low or too_high else None

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{_shown(self.low)}, {_shown(self.high)}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'above' if self.low_open else 'at least'} {_shown(self.low)}"
        return f"{'below' if self.high_open else 'at most'} {_shown(self.high)}" if self.high is not None else "a number"


def _shown(number: float) -> str:
    return str(number) if isinstance(number, int) else f"{number:g}"


def bounded(default: T, bound: Bound) -> T:
    """A dataclass field with ``default`` whose values must lie within ``bound``."""
    return field(default=default, metadata={BOUND_KEY: bound})


# The ranges keys share. Counts of things start at 1; work bits stop at 64 as the genesis's do ("not
# minable here"); a seed is written into report.json, whose encoder refuses integers beyond 64 bits.
COUNT = Bound(low=1)
NON_NEGATIVE = Bound(low=0)
POSITIVE = Bound(low=0, low_open=True)
SHARE = Bound(low=0, low_open=True, high=1)
FRACTION = Bound(low=0, high=1)
WORK_BITS = Bound(low=0, high=64)
SEED = Bound(low=0, high=2**63 - 1)


@dataclass(frozen=True)
class Network:
    consensus: ConsensusKind = ConsensusKind.PBFT
    nodes: int = bounded(4, COUNT)
    topology: Topology = Topology.FULL_MESH
    votes: VotePath = VotePath.ALL_TO_ALL  # PBFT's vote path: "all-to-all" or "collector" (docs/consensus.md)
    degree: int = bounded(4, COUNT)  # k of k-regular
    bootstrap_nodes: int = bounded(3, COUNT)  # second tier of the hierarchy
    regions: list[str] = field(default_factory=list)
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # one-way, region -> region


@dataclass(frozen=True)
class Consensus:
    batch_size: int = bounded(500, COUNT)
    batch_interval_ms: int = bounded(50, COUNT)
    view_timeout_ms: int = bounded(2000, COUNT)
    view_timeout_max_ms: int = bounded(30000, COUNT)
    min_work_bits: int = bounded(8, WORK_BITS)
    crypto: CryptoBackend = CryptoBackend.COINCURVE
    # "reputation": a validator that missed its turn leads nothing for a while (popbench/pop/leaders.py);
    # "round-robin": the wave-2 rotation, leader_for_view(v + h), kept to compare the two
    leader_rotation: LeaderRotation = LeaderRotation.REPUTATION
    # collector votes only: no certificate this long after a share and the view falls back to all-to-all
    collector_timeout_ms: int = bounded(1000, COUNT)


@dataclass(frozen=True)
class Workload:
    mode: WorkloadMode = WorkloadMode.OPEN
    # AGGREGATE proofs/s across all drivers (open loop; 0: no load); closed loop: pool size per second
    rate: float = bounded(500.0, NON_NEGATIVE)
    shape: LoadShape = LoadShape.CONSTANT
    ramp_from: float = bounded(0.0, NON_NEGATIVE)
    steps: list[float] = field(default_factory=list, metadata={BOUND_KEY: NON_NEGATIVE})  # each
    drivers: int = bounded(1, COUNT)
    in_flight: int = bounded(200, COUNT)  # closed loop: proofs outstanding across all drivers
    invalid_fraction: float = bounded(0.0, FRACTION)
    invalid_kinds: list[InvalidKind] = field(default_factory=lambda: list(InvalidKind))
    work_bits: int = bounded(8, WORK_BITS)
    payload_bytes: int = bounded(64, Bound(low=0, high=MAX_PAYLOAD_BYTES))


@dataclass(frozen=True)
class Miners:
    count: int = bounded(0, NON_NEGATIVE)
    work_bits: int = bounded(12, WORK_BITS)  # PoP: work of the proofs miners find and submit
    block_interval_ms: int = bounded(2000, COUNT)  # PoW: target block interval
    retarget_blocks: int = bounded(10, COUNT)
    initial_work_bits: int = bounded(16, WORK_BITS)
    blocks_per_miner: int = bounded(0, NON_NEGATIVE)  # concurrent-miners: stop after this many wins (0: run for the duration)
    mining_nodes: list[int] = field(default_factory=list, metadata={BOUND_KEY: NON_NEGATIVE})  # PoW: which nodes mine (empty: all)


@dataclass(frozen=True)
class Run:
    duration_s: float = bounded(20.0, Bound(low=0.1))  # the measured window, warm-up and cool-down included
    warmup_s: float = bounded(2.0, NON_NEGATIVE)
    cooldown_s: float = bounded(2.0, NON_NEGATIVE)
    status_interval_s: float = bounded(1.0, Bound(low=0.05))
    seed: int = bounded(1, SEED)
    ready_timeout_s: float = bounded(120.0, POSITIVE)
    drain_s: float = bounded(10.0, NON_NEGATIVE)  # after the window, how long drivers wait for outstanding commits


@dataclass(frozen=True)
class Score:
    min_score: float = bounded(0.0, Bound(low=0, high=100))  # a total is 0-100
    light_load_fraction: float = bounded(0.02, FRACTION)  # offered below this share of the verify-bound ceiling is "light load"


@dataclass(frozen=True)
class Slo:
    """The service level a run is judged against (docs/scoring.md): what the user promises their users."""

    latency_ms: float = bounded(2000.0, POSITIVE)  # L: the commit latency target, due time to commit seen
    within_share: float = bounded(0.99, SHARE)  # share of the items due in the steady window that must commit within L
    min_delivery: float = bounded(0.95, SHARE)  # committed in the window over offered: below it the network fell behind
    min_links_share: float = bounded(1.0, SHARE)  # least share of intended links up at any sample of the steady window


@dataclass(frozen=True)
class GrowthThresholds:
    """The soak's growth verdict (harness/metrics/growth.py, docs/metrics.md): a quantity is flagged when the
    lower 95 % confidence bound of its slope over the steady window exceeds its threshold here."""

    uss_mib_per_hour: float = bounded(10.0, POSITIVE)  # median and max node USS
    fds_per_hour: float = bounded(10.0, POSITIVE)  # open file descriptors of the node with the most
    db_bytes_per_block_per_hour: float = bounded(200.0, POSITIVE)  # database + WAL growth per committed block (all nodes)
    cpu_ms_per_block_per_hour: float = bounded(2.0, POSITIVE)  # node CPU per committed block (median node)
    min_points: int = bounded(6, Bound(low=3))  # fewer samples in the steady window: "not enough samples"
    min_span_s: float = bounded(600.0, NON_NEGATIVE)  # a shorter steady window: "not enough samples"


@dataclass(frozen=True)
class Fault:
    """One planned fault (docs/faults.md): what, when, for how long, to whom, and its figures."""

    at_s: float = field(metadata={BOUND_KEY: NON_NEGATIVE})
    kind: FaultKind
    # who: "node:3", "leader" (the current one), "random:2" (nodes drawn from the run's seed),
    # "fraction:0.25"; partitions also take "halves", "minority" (f nodes), "bridge" (two halves that
    # only node 0 joins); the old key `node = 3` means "node:3"
    target: str = ""
    duration_s: float = bounded(0.0, NON_NEGATIVE)  # heals this long after at_s; 0: never (kill: left down)
    behaviour: str = ""  # for byzantine: a ByzantineBehaviour value (popbench.kinds)
    delay_ms: float = bounded(0.0, NON_NEGATIVE)  # link: one-way delay; disk slow: per write
    jitter_ms: float = bounded(0.0, NON_NEGATIVE)  # link
    loss: float = bounded(0.0, FRACTION)  # link: share of packets (frames) lost
    rate_kbit: float = bounded(0.0, NON_NEGATIVE)  # link: bandwidth cap, 0: none
    offset_ms: float = bounded(0.0, Bound(low=-86_400_000, high=86_400_000))  # clock-skew: wall clock offset, up to a day either way
    drift_ppm: float = bounded(0.0, Bound(low=-500_000, high=500_000))  # clock-skew: timers run this much fast (+) or slow
    mode: str = ""  # disk: a DiskMode value
    mib_per_min: float = bounded(1.0, POSITIVE)  # leak: memory the target allocates and holds per minute
    mechanism: FaultMechanism = FaultMechanism.AUTO  # partition and link: kernel or transport

    @property
    def node(self) -> int:
        """The node a ``node:N`` target names (-1 for any other target)."""
        kind, _, value = self.target.partition(":")
        return int(value) if kind == "node" else -1


NEMESIS_KINDS = ("kill", "pause", "partition", "link", "clock-skew", "disk", "wipe")


@dataclass(frozen=True)
class Nemesis:
    """A random nemesis (harness/nemesis.py): faults drawn from a seed within a declared tolerance."""

    kind: str = "none"  # "none" or "random" (popbench run --nemesis random)
    seed: int = bounded(-1, Bound(low=-1, high=2**63 - 1))  # -1: the run's seed
    max_faulty: int = bounded(1, NON_NEGATIVE)  # nodes faulty at once, at most (capped at f)
    kinds: list[str] = field(default_factory=lambda: list(NEMESIS_KINDS))
    min_duration_s: float = bounded(3.0, POSITIVE)
    max_duration_s: float = bounded(10.0, POSITIVE)
    min_quiet_s: float = bounded(3.0, NON_NEGATIVE)  # between one fault's heal and the next fault
    max_quiet_s: float = bounded(8.0, NON_NEGATIVE)


@dataclass(frozen=True)
class Profile:
    name: str
    description: str = ""
    network: Network = field(default_factory=Network)
    consensus: Consensus = field(default_factory=Consensus)
    workload: Workload = field(default_factory=Workload)
    miners: Miners = field(default_factory=Miners)
    run: Run = field(default_factory=Run)
    score: Score = field(default_factory=Score)
    slo: Slo = field(default_factory=Slo)
    faults: list[Fault] = field(default_factory=list)
    nemesis: Nemesis = field(default_factory=Nemesis)
    growth: GrowthThresholds = field(default_factory=GrowthThresholds)
    source: str = ""


SECTIONS: dict[str, type] = {"network": Network, "consensus": Consensus, "workload": Workload,
                             "miners": Miners, "run": Run, "score": Score, "slo": Slo, "nemesis": Nemesis,
                             "growth": GrowthThresholds}  # fmt: skip


# -- loading ------------------------------------------------------------------------------------------
def profile_path(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists():
        return candidate
    return PROFILES_DIR / f"{name_or_path}.toml"


def load_profile(name_or_path: str) -> Profile:
    path = profile_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as err:
        known = ", ".join(name for name, _ in list_profiles())
        raise ConfigError(f"no such profile (shipped: {known})", source=str(path)) from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"not valid TOML: {err}", source=str(path)) from err
    return profile_from_dict(data, str(path), default_name=path.stem)


def profile_from_dict(data: dict[str, Any], source: str, default_name: str = "custom") -> Profile:
    allowed = {"name", "description", "faults", *SECTIONS}
    _check_keys(data, allowed, "", source)
    sections = {name: _section(cls, data.get(name, {}), name, source) for name, cls in SECTIONS.items()}
    faults = [_fault(entry, i, source) for i, entry in enumerate(_as_list(data.get("faults", []), "faults", source))]
    profile = Profile(name=str(data.get("name", default_name)), description=str(data.get("description", "")),
                      faults=faults, source=source, **sections)  # fmt: skip
    validate(profile)
    return profile


def list_profiles() -> list[tuple[str, str]]:
    entries = []
    for path in sorted(PROFILES_DIR.glob("*.toml"), key=lambda p: p.stem):
        try:
            entries.append((path.stem, str(tomllib.loads(path.read_text()).get("description", ""))))
        except (OSError, tomllib.TOMLDecodeError):
            entries.append((path.stem, "(unreadable)"))
    return entries


def apply_overrides(profile: Profile, **overrides: Any) -> Profile:
    """Command-line flags override the file: ``nodes``, ``duration_s``, ``rate``, ``seed``, ``consensus``..."""
    where = {"nodes": "network", "consensus": "network", "topology": "network", "duration_s": "run", "seed": "run",
             "rate": "workload", "drivers": "workload", "mode": "workload", "in_flight": "workload"}  # fmt: skip
    updated = profile
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in where:
            raise ConfigError("not an overridable setting", key=key)
        section = getattr(updated, where[key])
        checked = _coerce(value, get_type_hints(type(section))[key], f"{where[key]}.{key}", "command line")
        updated = dataclasses.replace(updated, **{where[key]: dataclasses.replace(section, **{key: checked})})
    if overrides.get("duration_s") is not None:
        updated = dataclasses.replace(updated, run=fit_to_duration(updated.run, profile.run.duration_s))
    validate(updated)
    return updated


def fit_to_duration(run: Run, profile_duration_s: float) -> Run:
    """A window shortened on the command line keeps a steady part of at least half of it: when the
    profile's warm-up and cool-down would take more, both shrink in proportion to the duration (their
    share of the profile's window), and further if that share is itself over half (docs/profiles.md)."""
    if run.warmup_s + run.cooldown_s <= STEADY_SHARE_MIN * run.duration_s:
        return run
    factor = min(1.0, run.duration_s / profile_duration_s)
    warmup, cooldown = run.warmup_s * factor, run.cooldown_s * factor
    room = (1 - STEADY_SHARE_MIN) * run.duration_s
    if warmup + cooldown > room:
        warmup, cooldown = warmup * room / (warmup + cooldown), cooldown * room / (warmup + cooldown)
    return dataclasses.replace(run, warmup_s=round(warmup, 2), cooldown_s=round(cooldown, 2))


def scaling_note(before: Run, after: Run) -> str | None:
    """What :func:`fit_to_duration` did, for the console; None when it left the phases alone."""
    if (before.warmup_s, before.cooldown_s) == (after.warmup_s, after.cooldown_s):
        return None
    return (f"warm-up scaled to {after.warmup_s:g} s and cool-down to {after.cooldown_s:g} s for a {after.duration_s:g} s run "
            f"(the profile's {before.warmup_s:g} s and {before.cooldown_s:g} s are for {before.duration_s:g} s)")  # fmt: skip


# -- validation -----------------------------------------------------------------------------------------
def validate(profile: Profile) -> None:
    """Every key within its Bound, then what the keys must satisfy together."""
    src = profile.source or "profile"
    net, run, load = profile.network, profile.run, profile.workload
    for name in SECTIONS:
        _check_bounds(getattr(profile, name), name, src)
    for index, fault in enumerate(profile.faults):
        _check_bounds(fault, f"faults[{index}]", src)
    if load.mode == "closed" and load.rate <= 0:
        raise ConfigError(
            "closed loop needs a rate > 0: it sizes the pool of pre-signed proofs (rate x duration)", key="workload.rate", source=src
        )
    if run.warmup_s + run.cooldown_s >= run.duration_s:
        raise ConfigError("warm-up plus cool-down must leave a steady window inside the duration", key="run.warmup_s", source=src)
    if net.consensus == "pbft" and net.topology == "k-regular" and net.votes != "collector":
        raise ConfigError("PBFT over a bounded (k-regular) mesh needs votes = \"collector\": all-to-all votes flooded "
                          "over a mesh cost more than the full mesh; use full-mesh or hierarchy", key="network.topology",
                          source=src)  # fmt: skip
    if profile.consensus.view_timeout_max_ms < profile.consensus.view_timeout_ms:
        raise ConfigError("must be at least consensus.view_timeout_ms (the first timeout doubles up to it)",
                          key="consensus.view_timeout_max_ms", source=src)  # fmt: skip
    _check_latency(net, src)
    _check_nemesis(profile.nemesis, src)
    for index, fault in enumerate(profile.faults):
        if fault.target.startswith("node:") and not 0 <= fault.node < net.nodes:
            raise ConfigError(f"node {fault.node} does not exist in a {net.nodes}-node run", key="faults.node", source=src)
        if fault.kind == FaultKind.BYZANTINE and fault.behaviour in COLLECTOR_FAULTS and net.votes != VotePath.COLLECTOR:
            raise ConfigError(f"{fault.behaviour!r} is a collector fault: it needs network.votes = \"collector\"",
                              key=f"faults[{index}].behaviour", source=src)  # fmt: skip
    for node in profile.miners.mining_nodes:
        if node >= net.nodes:
            raise ConfigError(f"node {node} does not exist in a {net.nodes}-node run", key="miners.mining_nodes", source=src)


def _check_bounds(section: object, name: str, src: str) -> None:
    """Each field of ``section`` that declares a Bound, and each item of such a list, within it."""
    for item in dataclasses.fields(section):  # type: ignore[arg-type]  # a section is a dataclass instance
        bound = item.metadata.get(BOUND_KEY)
        if bound is None:
            continue
        value = getattr(section, item.name)
        for number in value if isinstance(value, list) else [value]:
            problem = bound.problem(number)
            if problem:
                raise ConfigError(problem, key=f"{name}.{item.name}", source=src)


def key_bound(key: str) -> tuple[type[int] | type[float], Bound]:
    """The type and Bound a dotted profile key (``workload.rate``) declares: what a flag overriding it
    must accept, and no more."""
    section, _, name = key.partition(".")
    cls = SECTIONS.get(section)
    found = {item.name: item for item in dataclasses.fields(cls)} if cls else {}
    if name not in found or BOUND_KEY not in found[name].metadata:
        raise ConfigError("not a numeric profile key with a declared range", key=key)
    kind = get_type_hints(cls)[name]
    return (int if kind is int else float), found[name].metadata[BOUND_KEY]


def _check_latency(net: Network, src: str) -> None:
    for origin, row in net.latency_ms.items():
        if origin not in net.regions:
            raise ConfigError(f"region {origin!r} is not in network.regions", key=f"network.latency_ms.{origin}", source=src)
        for target, value in row.items():
            if target not in net.regions:
                raise ConfigError(f"region {target!r} is not in network.regions", key=f"network.latency_ms.{origin}.{target}", source=src)
            if not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"must be a non-negative number, got {value!r}", key=f"network.latency_ms.{origin}.{target}", source=src)
    if net.latency_ms:
        missing = [f"{a}->{b}" for a in net.regions for b in net.regions if a != b and b not in net.latency_ms.get(a, {})]
        if missing:
            raise ConfigError(f"latency matrix is incomplete: missing {', '.join(missing[:5])}", key="network.latency_ms", source=src)


def _section(cls: type, raw: Any, name: str, source: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError("must be a table", key=name, source=source)
    hints = get_type_hints(cls)
    _check_keys(raw, set(hints), f"{name}.", source)
    return cls(**{key: _coerce(value, hints[key], f"{name}.{key}", source) for key, value in raw.items()})


def _fault(raw: Any, index: int, source: str) -> Fault:
    key = f"faults[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError("must be a table", key=key, source=source)
    for required in ("at_s", "kind"):
        if required not in raw:
            raise ConfigError("missing (every fault needs at_s, kind and a target or node)", key=f"{key}.{required}", source=source)
    raw = _with_target(raw, key, source)
    fault: Fault = _section(Fault, raw, key, source)
    if fault.kind == FaultKind.BYZANTINE:
        _choice(fault.behaviour, BYZANTINE_KINDS, f"{key}.behaviour", source)
    if fault.kind == FaultKind.DISK:
        _choice(fault.mode, tuple(values(DiskMode)), f"{key}.mode", source)
    _check_target(fault, key, source)
    return fault


SINGLE_NODE_KINDS = (FaultKind.BYZANTINE, FaultKind.RESTART)  # these name one node
PARTITION_TARGETS = ("halves", "minority", "bridge", "leader")


def _with_target(raw: dict[str, Any], key: str, source: str) -> dict[str, Any]:
    """``node = 3`` is the older spelling of ``target = "node:3"``; exactly one of them is required."""
    if "node" in raw and "target" in raw:
        raise ConfigError("give node or target, not both", key=f"{key}.node", source=source)
    if "node" not in raw and "target" not in raw:
        raise ConfigError("missing (every fault needs at_s, kind and a target or node)", key=f"{key}.target", source=source)
    if "node" not in raw:
        return raw
    node = raw["node"]
    if not isinstance(node, int) or isinstance(node, bool) or node < 0:
        raise ConfigError(f"must be a node id (at least 0), got {node!r}", key=f"{key}.node", source=source)
    return {**{k: v for k, v in raw.items() if k != "node"}, "target": f"node:{node}"}


def _check_target(fault: Fault, key: str, source: str) -> None:
    kind, _, value = fault.target.partition(":")
    if fault.kind in SINGLE_NODE_KINDS and kind != "node":
        raise ConfigError(f"a {fault.kind} fault names one node (node = N), got {fault.target!r}", key=f"{key}.target", source=source)
    if kind == "node" and value.isdigit():
        return
    if kind == "random" and value.isdigit() and int(value) >= 1:
        return
    if kind == "fraction" and _is_share(value):
        return
    if fault.target == "leader" or (fault.kind == FaultKind.PARTITION and fault.target in PARTITION_TARGETS):
        return
    known = "node:N, leader, random:K, fraction:F" + (", halves, minority, bridge" if fault.kind == FaultKind.PARTITION else "")
    raise ConfigError(f"unknown target {fault.target!r} (known: {known})", key=f"{key}.target", source=source)


def _check_nemesis(nemesis: Nemesis, source: str) -> None:
    _choice(nemesis.kind, ("none", "random"), "nemesis.kind", source)
    for kind in nemesis.kinds:
        _choice(kind, NEMESIS_KINDS, "nemesis.kinds", source)
    if not nemesis.kinds:
        raise ConfigError("must name at least one kind", key="nemesis.kinds", source=source)
    if nemesis.max_duration_s < nemesis.min_duration_s or nemesis.max_quiet_s < nemesis.min_quiet_s:
        raise ConfigError("each max_* must be at least its min_*", key="nemesis.max_duration_s", source=source)


def _is_share(text: str) -> bool:
    try:
        return 0 < float(text) <= 1
    except ValueError:
        return False


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    origin = getattr(hint, "__origin__", hint)
    if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if origin is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(origin, type) and issubclass(origin, StrEnum) and isinstance(value, str):
        return _enum_member(origin, value, key, source)
    if origin is str and isinstance(value, str):
        return value
    if origin is list and isinstance(value, list):
        inner = hint.__args__[0]
        return [_coerce(item, inner, key, source) for item in value]
    if origin is dict and isinstance(value, dict):
        return value
    raise ConfigError(f"must be {getattr(origin, '__name__', origin)}, got {value!r}", key=key, source=source)


def _check_keys(data: dict[str, Any], allowed: set[str], prefix: str, source: str) -> None:
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(sorted(allowed))})"
            raise ConfigError(f"unknown key{hint}", key=f"{prefix}{key}", source=source)


def _enum_member(kind: type[StrEnum], value: str, key: str, source: str) -> StrEnum:
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(f"must be one of {', '.join(values(kind))}, got {value!r}", key=key, source=source) from None


def _choice(value: str, choices: tuple[str, ...], key: str, source: str) -> None:
    if value not in choices:
        raise ConfigError(f"must be one of {', '.join(choices)}, got {value!r}", key=key, source=source)


def _as_list(value: Any, key: str, source: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError("must be a list of tables", key=key, source=source)
    return value
