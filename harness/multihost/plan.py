"""Which host runs which validators, and at which address each validator and each host's control listens.

A run of N validators on H hosts gives each host K = ceil(N/H) validators: host i (its ordinal: a
StatefulSet pod's index, or the i-th loopback address on one machine) runs ids [i*K, min((i+1)*K, N)).
Every address follows from the plan, so no process has to learn another's: validator n listens on host
n // K at ``base_port + n % K``, and host i's control channel on ``control_port``. The same ports on every
host is what Kubernetes gives a StatefulSet's pods, and what distinct loopback addresses (127.0.1.x;
all of 127.0.0.0/8 is loopback on Linux) give on one machine.

Hosts are named (a pod's DNS name) or numeric. Nodes dial numeric addresses only (a node never runs the
resolver: docs/design.md), so names are resolved once, before anything is forked (:func:`resolved`).
"""

from __future__ import annotations

import ipaddress
import math
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from popbench.errors import ConfigError

DEFAULT_BASE_PORT = 7100  # validator k of a host listens on base_port + k
DEFAULT_CONTROL_PORT = 7000  # the host supervisor's control channel
LOOPBACK_PATTERN = "127.0.1.{n}"  # one machine: host i on 127.0.1.(i+1), so 127.0.0.1 stays the one-host runs'
RESOLVE_RETRY_S = 0.5
Address = tuple[str, int]
Resolver = Callable[[str], str]


@dataclass(frozen=True)
class HostPlan:
    """N validators over H hosts: each host's ids, and every validator's and control channel's address."""

    nodes: int
    hosts: int
    names: tuple[str, ...]  # host i's DNS name or IPv4 address
    base_port: int = DEFAULT_BASE_PORT
    control_port: int = DEFAULT_CONTROL_PORT

    def __post_init__(self) -> None:
        if not 1 <= self.hosts <= self.nodes:
            raise ConfigError(f"{self.hosts} hosts for {self.nodes} validators: need 1 <= hosts <= validators", key="--hosts")
        if len(self.names) != self.hosts:
            raise ConfigError(f"{len(self.names)} host addresses for {self.hosts} hosts", key="--addresses")
        if (self.hosts - 1) * self.per_host >= self.nodes:
            fewer = math.ceil(self.nodes / self.per_host)
            raise ConfigError(f"{self.nodes} validators at {self.per_host} a host fill only {fewer} of {self.hosts} hosts "
                              f"(host {self.hosts - 1} would run none): use --hosts {fewer}", key="--hosts")  # fmt: skip
        last = self.base_port + self.per_host - 1
        if not 0 < self.base_port <= last <= 65535 or not 0 < self.control_port <= 65535:
            raise ConfigError(f"ports {self.base_port}-{last} and {self.control_port} must lie in 1-65535", key="--base-port")
        if self.base_port <= self.control_port <= last:
            raise ConfigError(f"control port {self.control_port} is one of the validators' ports {self.base_port}-{last}",
                              key="--control-port")  # fmt: skip

    @property
    def per_host(self) -> int:
        """K: validators a host runs (the last host may run fewer)."""
        return math.ceil(self.nodes / self.hosts)

    def ids(self, ordinal: int) -> range:
        self._check_ordinal(ordinal)
        return range(ordinal * self.per_host, min((ordinal + 1) * self.per_host, self.nodes))

    def host_of(self, node_id: int) -> int:
        if not 0 <= node_id < self.nodes:
            raise ConfigError(f"validator {node_id} is not one of 0-{self.nodes - 1}")
        return node_id // self.per_host

    def port_of(self, node_id: int) -> int:
        return self.base_port + node_id - self.host_of(node_id) * self.per_host

    def endpoint(self, node_id: int) -> Address:
        return self.names[self.host_of(node_id)], self.port_of(node_id)

    def endpoints(self) -> list[Address]:
        return [self.endpoint(node_id) for node_id in range(self.nodes)]

    def control(self, ordinal: int) -> Address:
        self._check_ordinal(ordinal)
        return self.names[ordinal], self.control_port

    def _check_ordinal(self, ordinal: int) -> None:
        if not 0 <= ordinal < self.hosts:
            raise ConfigError(f"ordinal {ordinal} is not one of 0-{self.hosts - 1}", key="--ordinal")

    def describe(self) -> str:
        first, last = self.names[0], self.names[-1]
        where = first if self.hosts == 1 else f"{first} ... {last}"
        return (f"{self.nodes} validators on {self.hosts} hosts ({where}), {self.per_host} a host, "
                f"ports {self.base_port}-{self.base_port + self.per_host - 1}, control {self.control_port}")  # fmt: skip


def expand_names(addresses: str, hosts: int) -> tuple[str, ...]:
    """``a,b,c`` lists each host; a pattern names host i through ``{i}`` (its ordinal) or ``{n}`` (i + 1):
    ``127.0.1.{n}`` on one machine, ``popbench-{i}.popbench.NS.svc.cluster.local`` in a cluster."""
    if "," in addresses:
        return tuple(part.strip() for part in addresses.split(","))
    if "{" in addresses:
        try:
            return tuple(addresses.format(i=i, n=i + 1) for i in range(hosts))
        except (KeyError, IndexError, ValueError) as err:
            raise ConfigError(f"{addresses!r}: a pattern may use only {{i}} and {{n}} ({err})", key="--addresses") from None
    return (addresses,)  # one host; for more, HostPlan says how many addresses it needs


def ordinal_from_hostname(hostname: str) -> int:
    """A StatefulSet pod is named ``<set>-<ordinal>``: its hostname says which host it is."""
    _, _, tail = hostname.rpartition("-")
    if not tail.isdigit():
        raise ConfigError(f"hostname {hostname!r} does not end in -<ordinal> (not a StatefulSet pod?)", key="--ordinal")
    return int(tail)


def is_ipv4(name: str) -> bool:
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


def resolve_ipv4(name: str) -> str:
    """One name's IPv4 address (PEERS carries IPv4 only); OSError when it does not resolve (yet)."""
    if is_ipv4(name):
        return name
    for *_, sockaddr in socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM):
        return str(sockaddr[0])
    raise OSError(f"{name} has no IPv4 address")


def resolved(plan: HostPlan, timeout_s: float, resolve: Resolver = resolve_ipv4) -> HostPlan:
    """The plan with every host name replaced by its IPv4 address, retried until ``timeout_s``: a pod's
    DNS record appears only once the pod is scheduled (the Service publishes not-ready addresses)."""
    deadline = time.monotonic() + timeout_s
    numeric: list[str] = []
    for name in plan.names:
        while True:
            try:
                numeric.append(resolve(name))
                break
            except OSError as err:
                if time.monotonic() >= deadline:
                    raise ConfigError(f"host {name!r} did not resolve within {timeout_s:g} s: {err}", key="--addresses") from None
                time.sleep(RESOLVE_RETRY_S)  # before anything is forked or served: nothing else to do meanwhile
    return replace(plan, names=tuple(numeric))
