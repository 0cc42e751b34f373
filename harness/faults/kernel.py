"""Network faults in the kernel: iptables cuts node pairs and loses their packets, tc shapes their links on ``lo``.

Usable where the harness runs as root with iptables and tc, and every node has its own loopback address
(``network.loopback = "per-node"``, harness/host/deploy.py), so a rule on a (source, destination) pair
touches exactly one pair of nodes; elsewhere the nodes emulate faults in their transport
(popbench/faults.py). The exact commands, the limits and the cleanup: docs/faults.md, "Kernel mechanism
(root)".

Everything one :class:`KernelNet` adds hangs off two roots it owns, so removing them removes it all:
its iptables chain ``PB-<tag>`` (one jump from OUTPUT: the partitions' DROP rules and the shaped links'
random-loss DROP rules) and the htb qdisc ``7062:`` at the root of ``lo`` (only while a link's rate or delay
is shaped).
"""

from __future__ import annotations

import atexit
import hashlib
import ipaddress
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from popbench.errors import HarnessError

Pair = tuple[int, int]

DEVICE = "lo"
ROOT = "7062"  # major handle of the root qdisc on lo ("pb" in hex): marks the tc tree as popbench's
CHAIN_PREFIX = "PB-"
CHAIN_NAME_MAX = 28  # iptables refuses longer chain names
MAX_SHAPES = 4096  # a handle is a class minor, a filter preference and a netem major at once: all below 0x7062
MAX_HOOKS = 64  # jumps to one chain removed at most (a loop bound; one is ever added)
WAIT = ("-w", "5")  # wait up to 5 s for the xtables lock another iptables holds, instead of failing
COMMAND_TIMEOUT_S = 30.0
QUANTUM = "65536"  # bytes an htb class sends per round: one whole 64 kB loopback (GSO) packet
UNCAPPED = ("rate", "100gbit", "ceil", "100gbit", "burst", "1m", "cburst", "1m")  # above anything lo carries
NETEM_LIMIT = "100000"  # packets netem may hold: its default 1000 drops on a busy delayed link
PROBE_FROM, PROBE_TO = "127.0.0.2", "127.0.0.3"


@dataclass(frozen=True)
class _Shape:
    pairs: frozenset[Pair]
    tc: bool  # has an htb class (a rate cap, and a netem leaf if it delays)
    loss_rules: tuple[str, ...]  # its random-loss DROP rules in the chain


class KernelNet:
    """Partitions and shaped links between nodes, each on its own loopback address, done by the kernel.

    ``addresses`` maps node ids to their IPv4 loopback addresses; ``tag`` names this instance's rules
    (the run id, say): a chain left by a crashed run of the same tag is cleared at the start. Every
    command run is in :attr:`commands`, in order, for the report. A context manager; also closed at exit.
    """

    @staticmethod
    def unavailable_reason(addresses: Mapping[int, str], netem: bool = True) -> str | None:
        """None when the kernel path can run here; else why not, in words.

        Checks: every node on its own loopback address, Linux, root, iptables, iptables-restore and tc
        installed and answering, and (in a throwaway network namespace, so the host is untouched) that the
        kernel takes a DROP rule, a random-loss rule, an htb tree with u32 filters and, if ``netem``, a
        netem qdisc (what a delay or jitter needs; :meth:`cannot_delay_reason` asks that alone)."""
        return _address_reason(addresses) or _host_reason() or _tools_reason() or _kernel_reason(netem)

    @staticmethod
    def cannot_delay_reason() -> str | None:
        """None when the kernel can delay and jitter packets (a netem qdisc); else why not, in words.

        Asks only that (in a throwaway network namespace); the rest is :meth:`unavailable_reason`'s."""
        return _probe_reason(*_NETEM_PROBE)

    def __init__(self, addresses: Mapping[int, str], tag: str) -> None:
        reason = _address_reason(addresses)
        if reason is not None:
            raise HarnessError(reason)
        self.addresses = dict(addresses)
        self.tag = tag
        self.chain = chain_name(tag)
        self.commands: list[str] = []
        self._cut: set[Pair] = set()
        self._shapes: dict[int, _Shape] = {}
        self._next_handle = 1
        self._root_owned = False
        self._closed = False
        self._pid = os.getpid()  # a forked child inherits the atexit hook; only this process may undo
        atexit.register(self._close_at_exit)
        try:
            self._clear_stale()
            self._run(_iptables("-N", self.chain))
            self._run(_iptables("-I", "OUTPUT", "1", "-j", self.chain))  # first: ahead of any ACCEPT for lo
        except HarnessError:
            self.close()
            raise

    def __enter__(self) -> KernelNet:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()

    # -- partitions --------------------------------------------------------------------------------
    def cut(self, pairs: Iterable[Pair]) -> None:
        """Drop every packet both ways between each pair of nodes, on established connections too.

        The rules match addresses only, not connection state, so a link that is up stops carrying data
        (TCP retransmits into the void) and a new dial's SYN goes nowhere. A pair already cut is left."""
        new = sorted(self._pairs(pairs) - self._cut)
        self._restore([f"-A {self.chain} {rule}" for pair in new for rule in self._drop_rules(pair)])
        self._cut.update(new)

    def uncut(self, pairs: Iterable[Pair]) -> None:
        """Let each pair talk again (a pair not cut is left); TCP resends what was held back."""
        healed = sorted(self._pairs(pairs) & self._cut)
        self._restore([f"-D {self.chain} {rule}" for pair in healed for rule in self._drop_rules(pair)])
        self._cut.difference_update(healed)

    @property
    def cut_pairs(self) -> frozenset[Pair]:
        return frozenset(self._cut)

    # -- shaped links ------------------------------------------------------------------------------
    def shape(self, pairs: Iterable[Pair], delay_ms: float = 0.0, jitter_ms: float = 0.0, loss: float = 0.0,
              rate_kbit: float = 0.0) -> int:  # fmt: skip
        """Shape each pair's link both ways; the handle undoes it (:meth:`unshape`).

        Each direction gets ``delay_ms`` (so a round trip 2 x delay) with uniform ``jitter_ms`` (tc netem),
        carries at most ``rate_kbit`` (0: no cap; tc htb), and loses the share ``loss`` (0..1) of its
        packets (an iptables ``statistic`` DROP rule in the chain, so a loss-only shape needs no qdisc). A
        pair may be in one shape at a time: unshape it before shaping it again."""
        chosen = self._pairs(pairs)
        netem = _netem_args(delay_ms, jitter_ms)
        rate = _rate_args(rate_kbit)
        probability = _loss_probability(loss)
        if not netem and not rate_kbit and not probability:
            raise HarnessError("a shape with no delay, jitter, loss or rate changes nothing")
        self._check_unshaped(chosen)
        handle = self._new_handle()
        uses_tc = bool(netem or rate_kbit)
        loss_rules = tuple(rule for pair in sorted(chosen) for rule in self._loss_rules(pair, probability)) if probability else ()
        self._shapes[handle] = _Shape(frozenset(chosen), uses_tc, loss_rules)
        try:
            if uses_tc:
                self._ensure_root()
                self._add_shape(handle, chosen, rate, netem)
            self._restore([f"-A {self.chain} {rule}" for rule in loss_rules])  # last: all or none of them
        except HarnessError:
            self._discard_shape(handle)
            raise
        return handle

    def unshape(self, handle: int) -> None:
        """Undo one shape: its loss rules, its filters, its class and netem; the root too once no shape uses tc."""
        shape = self._shapes.pop(handle, None)
        if shape is None:
            raise HarnessError(f"no shaped links with handle {handle} (shaped: {sorted(self._shapes) or 'none'})")
        self._restore([f"-D {self.chain} {rule}" for rule in shape.loss_rules])
        if shape.tc:
            self._run(_tc("filter", "del", "dev", DEVICE, "parent", f"{ROOT}:", "protocol", "ip", "prio", str(handle)))
            self._run(_tc("class", "del", "dev", DEVICE, "classid", f"{ROOT}:{handle:x}"))  # its netem goes with it
            self._drop_root_if_unused()

    @property
    def shaped(self) -> dict[int, frozenset[Pair]]:
        """The pairs of each live shape, by handle."""
        return {handle: shape.pairs for handle, shape in self._shapes.items()}

    # -- cleanup -----------------------------------------------------------------------------------
    def close(self) -> None:
        """Remove every rule, chain, filter, class and qdisc this instance added. Idempotent.

        Both roots go even if one fails to; the failure is raised after."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._close_at_exit)
        failures: list[str] = []
        for undo in (self._drop_root, self._remove_chain):
            try:
                undo()
            except HarnessError as err:
                failures.append(str(err))
        self._cut.clear()
        self._shapes.clear()
        if failures:
            raise HarnessError("kernel fault rules left behind: " + "; ".join(failures))

    def _close_at_exit(self) -> None:
        if os.getpid() == self._pid:
            self.close()

    def _clear_stale(self) -> None:
        """What a crashed run of the same tag left: its chain; and a popbench root on lo no live run owns."""
        self._remove_chain()
        if _popbench_root_present() and _owner_is_gone(self.tag):
            self._run(_tc("qdisc", "del", "dev", DEVICE, "root", "handle", f"{ROOT}:"))
            _release_owner(None)

    def _remove_chain(self) -> None:
        for _ in range(MAX_HOOKS):
            if not self._probe(_iptables("-C", "OUTPUT", "-j", self.chain)):
                break
            self._run(_iptables("-D", "OUTPUT", "-j", self.chain))
        if self._probe(_iptables("-S", self.chain)):
            self._run(_iptables("-F", self.chain))
            self._run(_iptables("-X", self.chain))

    # -- the tc tree -------------------------------------------------------------------------------
    def _ensure_root(self) -> None:
        """The htb root on lo, added with the first shape. Unclassified packets (every pair not shaped,
        drivers, the collector) take htb's direct queue: never delayed, never rate limited."""
        if self._root_owned:
            return
        owner = _read_owner()
        if owner is not None and owner[1] != self.tag and _alive(owner[0]):
            raise HarnessError(f"{DEVICE} is already shaped by run {owner[1]!r} (pid {owner[0]}); one run at a time may shape it")
        self._run(_tc("qdisc", "add", "dev", DEVICE, "root", "handle", f"{ROOT}:", "htb"))
        self._root_owned = True
        _write_owner(self.tag)

    def _drop_root(self) -> None:
        if not self._root_owned:
            return
        self._root_owned = False
        self._run(_tc("qdisc", "del", "dev", DEVICE, "root", "handle", f"{ROOT}:"))  # classes, filters, netem with it
        _release_owner(self.tag)

    def _add_shape(self, handle: int, pairs: set[Pair], rate: list[str], netem: list[str]) -> None:
        """A class (its rate), its netem leaf (delay, jitter, loss) and the filters steering the pairs to it."""
        classid = f"{ROOT}:{handle:x}"
        self._run(_tc("class", "add", "dev", DEVICE, "parent", f"{ROOT}:", "classid", classid, "htb", *rate, "quantum", QUANTUM))
        if netem:
            leaf = ("handle", f"{handle:x}:", "netem", "limit", NETEM_LIMIT, *netem)
            self._run(_tc("qdisc", "add", "dev", DEVICE, "parent", classid, *leaf))
        self._run(["tc", "-batch", "-"], "".join(self._filter_lines(handle, pairs)))

    def _discard_shape(self, handle: int) -> None:
        """Undo a half-made shape, whatever part of it exists (its loss rules, added last in one atomic
        restore, are never half there)."""
        if self._shapes.pop(handle).tc:
            self._probe(_tc("filter", "del", "dev", DEVICE, "parent", f"{ROOT}:", "protocol", "ip", "prio", str(handle)))
            self._probe(_tc("class", "del", "dev", DEVICE, "classid", f"{ROOT}:{handle:x}"))
            self._drop_root_if_unused()

    def _drop_root_if_unused(self) -> None:
        if not any(shape.tc for shape in self._shapes.values()):
            self._drop_root()

    def _filter_lines(self, handle: int, pairs: set[Pair]) -> list[str]:
        """Two u32 filters per pair (one a direction), all at preference ``handle`` so one command removes them."""
        lines = []
        for a, b in sorted(pairs):
            for src, dst in ((self.addresses[a], self.addresses[b]), (self.addresses[b], self.addresses[a])):
                lines.append(f"filter add dev {DEVICE} parent {ROOT}: protocol ip prio {handle} u32 "
                             f"match ip src {src}/32 match ip dst {dst}/32 flowid {ROOT}:{handle:x}\n")  # fmt: skip
        return lines

    def _check_unshaped(self, pairs: set[Pair]) -> None:
        if not pairs:
            raise HarnessError("a shape needs at least one pair of nodes")
        for handle, shape in self._shapes.items():
            overlap = sorted(pairs & shape.pairs)
            if overlap:
                raise HarnessError(f"pairs {overlap} are already shaped (handle {handle}); unshape them first")

    def _new_handle(self) -> int:
        if self._next_handle > MAX_SHAPES:
            raise HarnessError(f"more than {MAX_SHAPES} shapes in one run")
        handle, self._next_handle = self._next_handle, self._next_handle + 1
        return handle

    # -- pairs and iptables rules --------------------------------------------------------------------
    def _pairs(self, pairs: Iterable[Pair]) -> set[Pair]:
        """Each pair once, lower id first; unknown nodes and a node paired with itself are refused."""
        chosen: set[Pair] = set()
        for a, b in pairs:
            if a not in self.addresses or b not in self.addresses or a == b:
                raise HarnessError(f"({a}, {b}) is not a pair of distinct nodes of {sorted(self.addresses)}")
            chosen.add((min(a, b), max(a, b)))
        return chosen

    def _drop_rules(self, pair: Pair) -> list[str]:
        a, b = self.addresses[pair[0]], self.addresses[pair[1]]
        return [f"-s {a}/32 -d {b}/32 -j DROP", f"-s {b}/32 -d {a}/32 -j DROP"]

    def _loss_rules(self, pair: Pair, probability: str) -> list[str]:
        a, b = self.addresses[pair[0]], self.addresses[pair[1]]
        lose = f"-m statistic --mode random --probability {probability} -j DROP"
        return [f"-s {a}/32 -d {b}/32 {lose}", f"-s {b}/32 -d {a}/32 {lose}"]

    def _restore(self, lines: list[str]) -> None:
        """Many rules in one atomic iptables-restore (one iptables call per rule takes minutes for a big
        partition); --noflush leaves every other rule of the table alone."""
        if lines:
            self._run(["iptables-restore", *WAIT, "--noflush"], "*filter\n" + "\n".join(lines) + "\nCOMMIT\n")

    # -- running commands ----------------------------------------------------------------------------
    def _run(self, argv: list[str], stdin: str | None = None) -> str:
        """Run and log one command; a failure raises HarnessError with the command and its stderr."""
        shown = _shown(argv, stdin)
        self.commands.append(shown)
        done = _execute(argv, stdin)
        if done.returncode != 0:
            raise HarnessError(f"{shown} failed (exit {done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def _probe(self, argv: list[str]) -> bool:
        """Run and log a question (does this chain exist?): its exit status is the answer."""
        done = _execute(argv)
        self.commands.append(_shown(argv) + ("" if done.returncode == 0 else f"  # exit {done.returncode}"))
        return done.returncode == 0


def chain_name(tag: str) -> str:
    """``PB-<tag>``, made a valid chain name: other characters become '-', a long tag is cut and hashed."""
    clean = re.sub(r"[^A-Za-z0-9_.-]", "-", tag)
    room = CHAIN_NAME_MAX - len(CHAIN_PREFIX)
    if len(clean) > room or clean != tag:
        clean = clean[: room - 9] + "-" + hashlib.sha256(tag.encode()).hexdigest()[:8]
    return CHAIN_PREFIX + clean


def _iptables(*args: str) -> list[str]:
    return ["iptables", *WAIT, *args]


def _tc(*args: str) -> list[str]:
    return ["tc", *args]


def _netem_args(delay_ms: float, jitter_ms: float) -> list[str]:
    for name, value in (("delay_ms", delay_ms), ("jitter_ms", jitter_ms)):
        if not math.isfinite(value) or value < 0:
            raise HarnessError(f"{name} must be a finite number >= 0, not {value}")
    return ["delay", f"{delay_ms:g}ms", f"{jitter_ms:g}ms"] if delay_ms or jitter_ms else []


def _loss_probability(loss: float) -> str:
    """iptables statistic's --probability for ``loss`` ("" for none)."""
    if not math.isfinite(loss) or not 0 <= loss <= 1:
        raise HarnessError(f"loss is a share of packets, 0..1, not {loss}")
    return f"{loss:.10g}" if loss else ""


def _rate_args(rate_kbit: float) -> list[str]:
    if not math.isfinite(rate_kbit) or rate_kbit < 0:
        raise HarnessError(f"rate_kbit must be a finite number >= 0, not {rate_kbit}")
    if not rate_kbit:
        return list(UNCAPPED)
    rate = f"{max(1, round(rate_kbit * 1000))}bit"
    return ["rate", rate, "ceil", rate]


def _shown(argv: list[str], stdin: str | None = None) -> str:
    """The command as one could paste it into a shell, its input as a here-document."""
    return shlex.join(argv) + (f" <<'EOF'\n{stdin.rstrip()}\nEOF" if stdin else "")


def _execute(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise HarnessError(f"{_shown(argv, stdin)}: {err}") from None


# -- who owns the tc root on lo (one per host: a device has one root qdisc) --------------------------
def _owner_file() -> Path:
    base = Path("/run") if Path("/run").is_dir() else Path(tempfile.gettempdir())  # /run: gone at reboot, as the rules are
    return base / "popbench" / "lo-shaping.owner"


def _read_owner() -> tuple[int, str] | None:
    """(pid, tag) of the run that added the popbench root on lo, if it left its name."""
    try:
        pid, _, tag = _owner_file().read_text().strip().partition(" ")
        return int(pid), tag
    except (OSError, ValueError):
        return None


def _write_owner(tag: str) -> None:
    path = _owner_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{os.getpid()} {tag}\n")
    except OSError as err:  # unrecorded, another run would take this live root for a stale one
        raise HarnessError(f"cannot record who shapes {DEVICE} in {path}: {err}") from None


def _release_owner(tag: str | None) -> None:
    """Forget the owner (only if it is ``tag``, unless None)."""
    owner = _read_owner()
    if owner is not None and (tag is None or owner[1] == tag):
        _owner_file().unlink(missing_ok=True)


def _owner_is_gone(tag: str) -> bool:
    owner = _read_owner()
    return owner is None or owner[1] == tag or not _alive(owner[0])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _popbench_root_present() -> bool:
    done = _execute(_tc("qdisc", "show", "dev", DEVICE))
    return done.returncode == 0 and f"qdisc htb {ROOT}: root" in done.stdout


# -- can the kernel path run here ---------------------------------------------------------------------
def _host_reason() -> str | None:
    if sys.platform != "linux":
        return f"iptables and tc are Linux's; this is {sys.platform}"
    if os.geteuid() != 0:
        return "not running as root (iptables and tc need it)"
    for tool, package in (("iptables", "iptables"), ("iptables-restore", "iptables"), ("tc", "iproute2")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install -y {package})"
    return None


def _address_reason(addresses: Mapping[int, str]) -> str | None:
    if not addresses:
        return "no node addresses"
    seen: dict[str, int] = {}
    for node, host in sorted(addresses.items()):
        try:
            loopback = ipaddress.IPv4Address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            return f"node {node}'s address {host!r} is not an IPv4 loopback address (only {DEVICE} is shaped)"
        if host in seen:
            return (f"nodes {seen[host]} and {node} share {host}, so the kernel cannot tell them apart "
                    f'(network.loopback = "per-node" gives each node its own address)')  # fmt: skip
        seen[host] = node
    return None


def _tools_reason() -> str | None:
    for argv in (_iptables("-S", "OUTPUT"), _tc("qdisc", "show", "dev", DEVICE)):
        try:
            done = _execute(argv)
        except HarnessError as err:
            return str(err)
        if done.returncode != 0:
            return f"{shlex.join(argv)} does not work here: {done.stderr.strip()}"
    return None


_HTB_PROBE = (f"tc qdisc add dev lo root handle {ROOT}: htb && tc class add dev lo parent {ROOT}: classid {ROOT}:1 htb rate 1mbit"
              f" && tc filter add dev lo parent {ROOT}: protocol ip prio 1 u32 match ip src {PROBE_FROM}/32 flowid {ROOT}:1")  # fmt: skip
_PROBES = (
    ("the kernel refuses an iptables DROP rule",
     f"iptables -w 5 -N PB-probe && iptables -w 5 -A PB-probe -s {PROBE_FROM}/32 -d {PROBE_TO}/32 -j DROP"),
    ("the kernel has no iptables statistic match (CONFIG_NETFILTER_XT_MATCH_STATISTIC): packets cannot be lost at random",
     f"iptables -w 5 -N PB-probe && iptables -w 5 -A PB-probe -s {PROBE_FROM}/32 -m statistic --mode random --probability 0.5 -j DROP"),
    ("the kernel has no htb qdisc or u32 filter (CONFIG_NET_SCH_HTB, CONFIG_NET_CLS_U32)", _HTB_PROBE),
)  # fmt: skip
_NETEM_PROBE = ("the kernel has no netem qdisc (CONFIG_NET_SCH_NETEM; try modprobe sch_netem): delay and jitter cannot be shaped",
                _HTB_PROBE + f" && tc qdisc add dev lo parent {ROOT}:1 handle 1: netem delay 1ms")  # fmt: skip


def _kernel_reason(netem: bool) -> str | None:
    """The first probe the kernel fails (None: all pass)."""
    for reason, script in (*_PROBES, *([_NETEM_PROBE] if netem else [])):
        failed = _probe_reason(reason, script)
        if failed is not None:
            return failed
    return None


def _probe_reason(reason: str, script: str) -> str | None:
    """Run ``script`` in a fresh network namespace (unshare --net), so the host's rules are untouched:
    ``reason`` and its last stderr line if it fails. Without unshare, or where namespaces are refused (a
    container), nothing is probed (None): the first real command that fails says why."""
    if shutil.which("unshare") is None or _execute(["unshare", "--net", "true"]).returncode != 0:
        return None
    done = _execute(["unshare", "--net", "sh", "-ec", script])
    if done.returncode == 0:
        return None
    return f"{reason}: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f'exit {done.returncode}'}"
