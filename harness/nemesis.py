"""The random nemesis: faults drawn from a seed, within the tolerance the profile declares (docs/faults.md).

Jepsen's combined nemesis is the model: the window is cut into rounds; each round one fault (of a kind
drawn from ``nemesis.kinds``) hits up to ``nemesis.max_faulty`` nodes (at most f, so the network is
still meant to commit), lasts a drawn time and heals, and a quiet gap follows so recovery shows. The
faults are drawn before the run from ``nemesis.seed`` (the run's seed unless set) and the node count,
so the same seed replays the same schedule; they become ordinary ``[[faults]]`` entries, which is why
every one appears on the timeline, the terminal and the report like a hand-written one.
"""

from __future__ import annotations

import random
from dataclasses import replace

from harness.kinds import DiskMode, FaultKind, FaultMechanism
from harness.profile import Fault, Nemesis, Profile

# what each kind of the menu becomes (a kill heals by a restart; a wipe rejoins at once)
MENU = {
    "kill": FaultKind.KILL, "pause": FaultKind.PAUSE, "partition": FaultKind.PARTITION, "link": FaultKind.LINK,
    "clock-skew": FaultKind.CLOCK_SKEW, "disk": FaultKind.DISK, "wipe": FaultKind.WIPE,
}  # fmt: skip
FIRST_AT_FRACTION = 0.2  # the first fault comes after a fifth of the window: the steady state is seen first
LAST_HEAL_FRACTION = 0.85  # and the last has healed by then, so the end shows recovery


def with_nemesis(profile: Profile) -> Profile:
    """``profile`` with its random nemesis drawn into its faults (unchanged when it has none)."""
    nemesis = profile.nemesis
    if nemesis.kind != "random":
        return profile
    seed = nemesis.seed if nemesis.seed >= 0 else profile.run.seed
    drawn = draw_faults(nemesis, profile.network.nodes, profile.run.duration_s, seed)
    return replace(profile, faults=[*profile.faults, *drawn])


def draw_faults(nemesis: Nemesis, nodes: int, duration_s: float, seed: int) -> list[Fault]:
    rng = random.Random(f"popbench-nemesis-{seed}")
    tolerance = max(0, min(nemesis.max_faulty, (nodes - 1) // 3))
    faults: list[Fault] = []
    at_s = duration_s * FIRST_AT_FRACTION
    while tolerance:
        length = rng.uniform(nemesis.min_duration_s, nemesis.max_duration_s)
        if at_s + length > duration_s * LAST_HEAL_FRACTION:
            break
        faults.append(_fault(rng, rng.choice(nemesis.kinds), at_s, length, rng.randint(1, tolerance), nodes))
        at_s += length + rng.uniform(nemesis.min_quiet_s, nemesis.max_quiet_s)
    return faults


def _fault(rng: random.Random, name: str, at_s: float, length_s: float, count: int, nodes: int) -> Fault:
    kind = MENU[name]
    target = f"random:{count}"
    fault = Fault(at_s=round(at_s, 3), kind=kind, target=target, duration_s=round(length_s, 3))
    if kind == FaultKind.WIPE:
        return replace(fault, target=f"node:{rng.randrange(nodes)}", duration_s=0.0)
    if kind == FaultKind.PARTITION:
        return replace(fault, target="minority" if count > 1 else target, mechanism=FaultMechanism.AUTO)
    if kind == FaultKind.LINK:
        return replace(fault, delay_ms=rng.choice((50.0, 150.0, 400.0)), jitter_ms=rng.choice((0.0, 20.0, 100.0)),
                       loss=rng.choice((0.0, 0.01, 0.05)))  # fmt: skip
    if kind == FaultKind.CLOCK_SKEW:
        return replace(fault, offset_ms=rng.choice((-60_000.0, -5_000.0, 5_000.0, 60_000.0)),
                       drift_ppm=rng.choice((-100_000.0, 0.0, 100_000.0)))  # fmt: skip
    if kind == FaultKind.DISK:
        mode = rng.choice(list(DiskMode))
        return replace(fault, mode=mode.value, delay_ms=50.0 if mode == DiskMode.SLOW else 0.0)
    return fault
