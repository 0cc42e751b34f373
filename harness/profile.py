"""Run profiles: TOML files in profiles/, validated at the edge, overridable from the command line.

Every key is declared once, in the section dataclasses below (with its default). An unknown key or a
bad value is refused with ConfigError naming the file and the dotted key. Reference: docs/profiles.md.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, get_type_hints

from harness.kinds import FaultKind, InvalidKind, LoadShape, Topology, WorkloadMode
from popbench.errors import ConfigError
from popbench.kinds import ByzantineBehaviour, ConsensusKind, CryptoBackend, values

PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"
BYZANTINE_KINDS = tuple(values(ByzantineBehaviour))
STEADY_SHARE_MIN = 0.5  # --duration: warm-up and cool-down shrink so the steady part is at least this share


@dataclass(frozen=True)
class Network:
    consensus: ConsensusKind = ConsensusKind.PBFT
    nodes: int = 4
    topology: Topology = Topology.FULL_MESH
    degree: int = 4  # k of k-regular
    bootstrap_nodes: int = 3  # second tier of the hierarchy
    regions: list[str] = field(default_factory=list)
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # one-way, region -> region


@dataclass(frozen=True)
class Consensus:
    batch_size: int = 500
    batch_interval_ms: int = 50
    view_timeout_ms: int = 2000
    view_timeout_max_ms: int = 30000
    min_work_bits: int = 8
    crypto: CryptoBackend = CryptoBackend.COINCURVE


@dataclass(frozen=True)
class Workload:
    mode: WorkloadMode = WorkloadMode.OPEN
    rate: float = 500.0  # AGGREGATE proofs/s across all drivers (open loop); closed loop: pool size per second
    shape: LoadShape = LoadShape.CONSTANT
    ramp_from: float = 0.0
    steps: list[float] = field(default_factory=list)
    drivers: int = 1
    in_flight: int = 200  # closed loop: proofs outstanding across all drivers
    invalid_fraction: float = 0.0
    invalid_kinds: list[InvalidKind] = field(default_factory=lambda: list(InvalidKind))
    work_bits: int = 8
    payload_bytes: int = 64


@dataclass(frozen=True)
class Miners:
    count: int = 0
    work_bits: int = 12  # PoP: work of the proofs miners find and submit
    block_interval_ms: int = 2000  # PoW: target block interval
    retarget_blocks: int = 10
    initial_work_bits: int = 16
    blocks_per_miner: int = 0  # concurrent-miners: stop after this many wins (0: run for the duration)
    mining_nodes: list[int] = field(default_factory=list)  # PoW: which nodes mine (empty: all)


@dataclass(frozen=True)
class Run:
    duration_s: float = 20.0  # the measured window, warm-up and cool-down included
    warmup_s: float = 2.0
    cooldown_s: float = 2.0
    status_interval_s: float = 1.0
    seed: int = 1
    ready_timeout_s: float = 120.0
    drain_s: float = 10.0  # after the window, how long drivers wait for outstanding commits


@dataclass(frozen=True)
class Score:
    min_score: float = 0.0
    light_load_fraction: float = 0.02  # offered below this share of the verify-bound ceiling is "light load"


@dataclass(frozen=True)
class Slo:
    """The service level a run is judged against (docs/scoring.md): what the user promises their users."""

    latency_ms: float = 2000.0  # L: the commit latency target, due time to commit seen
    within_share: float = 0.99  # share of the items due in the steady window that must commit within L
    min_delivery: float = 0.95  # committed in the window over offered: below it the network fell behind
    min_links_share: float = 1.0  # least share of intended links up at any sample of the steady window


@dataclass(frozen=True)
class Fault:
    at_s: float
    kind: FaultKind
    node: int
    behaviour: str = ""  # for byzantine: a ByzantineBehaviour value (popbench.kinds)


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
    source: str = ""


SECTIONS: dict[str, type] = {"network": Network, "consensus": Consensus, "workload": Workload,
                             "miners": Miners, "run": Run, "score": Score, "slo": Slo}  # fmt: skip


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
    for path in sorted(PROFILES_DIR.glob("*.toml")):
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
    src = profile.source or "profile"
    net, run, load = profile.network, profile.run, profile.workload
    _at_least(net.nodes, 1, "network.nodes", src)
    _at_least(load.drivers, 1, "workload.drivers", src)
    _at_least(run.duration_s, 0.1, "run.duration_s", src)
    _at_least(run.status_interval_s, 0.05, "run.status_interval_s", src)
    _check_slo(profile.slo, src)
    if not 0.0 <= load.invalid_fraction <= 1.0:
        raise ConfigError(f"must be between 0 and 1, got {load.invalid_fraction}", key="workload.invalid_fraction", source=src)
    if load.mode == "closed" and load.rate <= 0:
        raise ConfigError(
            "closed loop needs a rate > 0: it sizes the pool of pre-signed proofs (rate x duration)", key="workload.rate", source=src
        )
    if run.warmup_s + run.cooldown_s >= run.duration_s:
        raise ConfigError("warm-up plus cool-down must leave a steady window inside the duration", key="run.warmup_s", source=src)
    if net.consensus == "pbft" and net.topology == "k-regular":
        raise ConfigError("PBFT runs over a full validator mesh; use full-mesh or hierarchy", key="network.topology", source=src)
    _check_latency(net, src)
    for fault in profile.faults:
        if not 0 <= fault.node < net.nodes:
            raise ConfigError(f"node {fault.node} does not exist in a {net.nodes}-node run", key="faults.node", source=src)


def _check_slo(slo: Slo, src: str) -> None:
    if slo.latency_ms <= 0:
        raise ConfigError(f"must be above 0, got {slo.latency_ms}", key="slo.latency_ms", source=src)
    for key in ("within_share", "min_delivery", "min_links_share"):
        value = getattr(slo, key)
        if not 0.0 < value <= 1.0:
            raise ConfigError(f"must be a share in (0, 1], got {value}", key=f"slo.{key}", source=src)


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
    for required in ("at_s", "kind", "node"):
        if required not in raw:
            raise ConfigError("missing (every fault needs at_s, kind and node)", key=f"{key}.{required}", source=source)
    fault = _section(Fault, raw, key, source)
    if fault.kind == FaultKind.BYZANTINE:
        _choice(fault.behaviour, BYZANTINE_KINDS, f"{key}.behaviour", source)
    return fault  # type: ignore[no-any-return]


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


def _at_least(value: float, minimum: float, key: str, source: str) -> None:
    if value < minimum:
        raise ConfigError(f"must be at least {minimum}, got {value}", key=key, source=source)


def _as_list(value: Any, key: str, source: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError("must be a list of tables", key=key, source=source)
    return value
