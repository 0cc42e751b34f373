"""A deployment spread over hosts: every validator's address from the plan, sockets only for this host's own.

The same :class:`harness.host.deploy.Deployment` that one-host runs use (node configs, dial lists,
regions, byzantine roles, the report's deployment summary), with the addresses of
:class:`harness.multihost.plan.HostPlan` instead of sockets bound at port 0. A host supervisor binds its
own validators' ports; the coordinator binds none.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from harness.host.deploy import Deployment, NetworkPlan, network_plan
from harness.multihost.plan import Address, HostPlan
from harness.profile import Profile
from popbench.errors import ConfigError, HarnessError
from popbench.genesis import load_genesis, load_keys
from popbench.net.peers import bind_listener

GENESIS_FILE = "genesis.json"
KEYS_FILE = "genesis.keys.json"


@dataclass
class PlannedDeployment(Deployment):
    plan: HostPlan = field(kw_only=True)
    local: dict[int, socket.socket] = field(default_factory=dict, kw_only=True)  # this host's validators

    @property
    def count(self) -> int:
        return self.plan.nodes

    def address(self, node_id: int) -> Address:
        return self.plan.endpoint(node_id)

    def listen_socket(self, node_id: int) -> socket.socket:
        try:
            return self.local[node_id]
        except KeyError:
            raise HarnessError(f"validator {node_id} runs on host {self.plan.host_of(node_id)}, not here") from None

    def close(self) -> None:
        for sock in self.local.values():
            sock.close()


def load_network(profile: Profile, genesis_dir: Path | None) -> NetworkPlan:
    """The profile's own genesis and keys (derived from its seed, as every host derives them), or the ones
    in ``genesis_dir`` (a Kubernetes ConfigMap and Secret); topology and regions always from the profile."""
    derived = network_plan(profile)
    if genesis_dir is None:
        return derived
    genesis = load_genesis(genesis_dir / GENESIS_FILE)
    keys = load_keys(genesis_dir / KEYS_FILE)
    count = len(genesis.validators)
    if count != profile.network.nodes or sorted(keys) != list(range(count)):
        raise ConfigError(f"{genesis_dir} holds {count} validators and {len(keys)} keys; the profile runs {profile.network.nodes}",
                          source=str(genesis_dir))  # fmt: skip
    return NetworkPlan(genesis, [keys[i] for i in range(count)], derived.topology, derived.regions)


def planned_deployment(profile: Profile, plan: HostPlan, network: NetworkPlan, data_dir: Path,
                       bind: tuple[str, range] | None = None) -> PlannedDeployment:  # fmt: skip
    """The deployment as host ``bind = (address, ids)`` sees it (binding those validators' ports on that
    address), or as the coordinator does (``bind`` None: no sockets)."""
    if plan.nodes != profile.network.nodes:
        raise ConfigError(f"the host plan has {plan.nodes} validators, the profile {profile.network.nodes}", key="--hosts")
    local: dict[int, socket.socket] = {}
    if bind is not None:
        host, ids = bind
        try:
            for node_id in ids:
                local[node_id] = bind_listener((host, plan.port_of(node_id)))
        except OSError as err:
            for sock in local.values():
                sock.close()
            raise HarnessError(f"cannot listen on {host}:{plan.port_of(node_id)} for validator {node_id}: {err}") from None
    return PlannedDeployment(
        profile, network.genesis, network.keys, network.topology, network.regions, [], data_dir, plan=plan, local=local
    )
