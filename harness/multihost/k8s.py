"""A profile rendered to Kubernetes manifests: the multi-host path's processes as a StatefulSet and a Job.

Pod i of the StatefulSet ``popbench`` runs ``popbench host-supervisor`` (validators [i*K, (i+1)*K),
forked by popbench's own supervisor, its ordinal from the pod's hostname); the headless Service gives
pod i the stable name ``popbench-i.popbench.<namespace>.svc.cluster.local``, which every process
resolves once (harness/multihost/plan.py). The Job runs ``popbench coordinate``: the drivers, the
collector and the one report, the same report.json, report.html and score as a one-host run. The
genesis is a ConfigMap and its keys a Secret (both derived from the profile's seed, as every host
would derive them). Requests and limits come from the capacity model (harness/capacity/model.py):
a pod's share of the node CPU the model predicts for N validators at the profile's rate. Timed faults
become one chaos-mesh Workflow (NetworkChaos for partitions and links, PodChaos for kills and pauses),
at pod granularity: a pod holds K validators. docs/kubernetes.md walks through it.
"""

from __future__ import annotations

import base64
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from harness.host.deploy import NetworkPlan, network_plan
from harness.kinds import FaultKind
from harness.multihost.deployment import GENESIS_FILE, KEYS_FILE
from harness.multihost.plan import DEFAULT_BASE_PORT, DEFAULT_CONTROL_PORT, HostPlan
from harness.profile import Fault, Profile
from harness.run.fault_targets import partition_sides, resolve_nodes
from popbench.genesis import write_genesis, write_keys
from popbench.kinds import VotePath

NAME = "popbench"
DEFAULT_NAMESPACE = "popbench"
DEFAULT_IMAGE = "popbench:dev"
PROFILE_FILE = "profile.toml"
CONFIG_DIR = "/etc/popbench"
HOST_DIR = "/var/lib/popbench"
REPORT_DIR = "/reports"
HOLD_AFTER_S = 3600.0  # the Job's pod stays this long after the report, so `kubectl cp` can fetch it

# The fitted model of docs/capacity.md (this 2-core host, PBFT all-to-all): node CPU ms per proof
# = 0.0764 N + (0.1083 N^2 + 0.489 N + 29.0) / batch, for all-to-all profiles; collector profiles take
# DOCUMENTED_COLLECTOR_COST below. `--model` gives another sweep's fit.
# (harness.capacity sits beside harness.multihost in the layers: the command passes a loaded model's
# coefficients in, as anything with cpu_ms_per_proof)


class CpuCost(Protocol):
    def cpu_ms_per_proof(self, nodes: float, proofs_per_block: float) -> float: ...


@dataclass(frozen=True)
class DocumentedCost:
    """harness.capacity.model.Coefficients' formula with the fit docs/capacity.md reports."""

    a_ms_per_proof_per_node: float = 0.0764
    b_ms_per_block_per_node2: float = 0.1083
    c_ms_per_block_per_node: float = 0.489
    d_ms_per_block: float = 29.0

    def cpu_ms_per_proof(self, nodes: float, proofs_per_block: float) -> float:
        per_block = self.b_ms_per_block_per_node2 * nodes * nodes + self.c_ms_per_block_per_node * nodes + self.d_ms_per_block
        return self.a_ms_per_proof_per_node * nodes + per_block / proofs_per_block


DOCUMENTED_COST = DocumentedCost()
# The collector vote path's cost, measured at N = 1000 only (docs/capacity.md, "A thousand validators":
# testnet-1000's run r8 spent 28.0 CPU-s of node time on a block of about 95 proofs, r9 19.2 CPU-s on a
# block of about 10): 18.17 CPU-s a block and 0.1035 CPU-s a proof, spread as linear in N (shares go to
# the collectors, so no N^2 term). Two runs at one size: a collector-mode sweep's fit (`--model`) replaces it.
DOCUMENTED_COLLECTOR_COST = DocumentedCost(
    a_ms_per_proof_per_node=0.1035, b_ms_per_block_per_node2=0.0, c_ms_per_block_per_node=18.17, d_ms_per_block=0.0
)
UTILISATION_CEILING = 0.7  # the planner's: cores at most 70 % busy (harness/capacity/model.py, DEFAULT_UTILISATION_CEILING)
MIN_CPU_MILLI = 100  # a pod's supervisor and idle validators: never request less
SUPERVISOR_MIB = 96  # popbench's supervisor (Python, the control channel) before any validator
VALIDATOR_MIB = 24  # one forked validator's RSS at small N, rounded up (USS ~11 MiB measured, docs/kubernetes.md)
LIMIT_FACTOR = 2  # limits at twice the requests: bursts (catch-up, view changes) are not throttled at once
COORDINATOR_CPU_MILLI = 1000  # the drivers sign and submit every proof: one core at the shipped rates
COORDINATOR_MIB = 512
CHAOS_GROUP = "chaos-mesh.org/v1alpha1"
CHAOS_FILE = "chaos-workflow.json"
KUSTOMIZATION = "kustomization.yaml"


@dataclass(frozen=True)
class Resources:
    cpu_milli: int
    memory_mib: int

    def spec(self) -> dict[str, Any]:
        request = {"cpu": f"{self.cpu_milli}m", "memory": f"{self.memory_mib}Mi"}
        limit = {"cpu": f"{self.cpu_milli * LIMIT_FACTOR}m", "memory": f"{self.memory_mib * LIMIT_FACTOR}Mi"}
        return {"requests": request, "limits": limit}


@dataclass(frozen=True)
class Rendered:
    """The manifests by file name (one resource each, JSON, which kubectl and kustomize read as YAML), and
    what could not be rendered and why."""

    files: dict[str, dict[str, Any]]
    resources: Resources
    plan: HostPlan
    skipped: list[str] = field(default_factory=list)

    def write(self, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name, resource in self.files.items():
            path = directory / name
            path.write_bytes(orjson.dumps(resource, option=orjson.OPT_INDENT_2) + b"\n")
            written.append(path)
        kustomization = directory / KUSTOMIZATION
        listed = "".join(f"  - {name}\n" for name in self.kustomized())
        kustomization.write_text(f"apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n{listed}")
        return [*written, kustomization]

    def kustomized(self) -> list[str]:
        """What ``kubectl apply -k`` starts: all but the faults, applied once the load window opens."""
        return [name for name in self.files if name != CHAOS_FILE]


def documented_cost(profile: Profile) -> DocumentedCost:
    """The documented fit for the profile's vote path: the all-to-all fit's N^2 term is what the collector
    path removes, so applying it to a collector profile would ask for several times the cores."""
    return DOCUMENTED_COLLECTOR_COST if profile.network.votes == VotePath.COLLECTOR else DOCUMENTED_COST


def cores_needed(profile: Profile, cost: CpuCost | None = None, utilisation: float = UTILISATION_CEILING) -> float:
    """The planner's rule (harness/capacity/model.py, plan_deployment): the node CPU the cost predicts at
    the profile's size, rate and batch (rate x batch interval), with cores kept at most ``utilisation``
    busy. ``cost``: the documented figures for the profile's vote path unless given."""
    cost = documented_cost(profile) if cost is None else cost
    batch = max(1.0, profile.workload.rate * profile.consensus.batch_interval_ms / 1000.0)
    return profile.workload.rate * cost.cpu_ms_per_proof(profile.network.nodes, batch) / (1000.0 * utilisation)


def planned_hosts(profile: Profile, cores_per_host: int, cost: CpuCost | None = None, utilisation: float = UTILISATION_CEILING) -> int:
    """The planner's host count: enough hosts of ``cores_per_host`` for ``cores_needed``, then the
    fewest that hold the same validators a host (1000 at 72 a host: 14 hosts, never one left empty)."""
    nodes = profile.network.nodes
    hosts = min(nodes, max(1, math.ceil(cores_needed(profile, cost, utilisation) / cores_per_host)))
    return math.ceil(nodes / math.ceil(nodes / hosts))


def pod_resources(profile: Profile, hosts: int, cost: CpuCost | None = None, utilisation: float = UTILISATION_CEILING) -> Resources:
    """A pod's share of the node CPU the model predicts at the profile's size and rate, within the
    utilisation ceiling, and memory for its supervisor and K validators."""
    nodes = profile.network.nodes
    per_host = math.ceil(nodes / hosts)
    cores = cores_needed(profile, cost, utilisation)
    cpu_milli = max(MIN_CPU_MILLI, math.ceil(cores * 1000 * per_host / nodes))
    return Resources(cpu_milli, SUPERVISOR_MIB + VALIDATOR_MIB * per_host)


def service_names(namespace: str) -> str:
    return f"{NAME}-{{i}}.{NAME}.{namespace}.svc.cluster.local"


def render(profile: Profile, profile_text: str, hosts: int, namespace: str = DEFAULT_NAMESPACE, image: str = DEFAULT_IMAGE,
           cost: CpuCost | None = None, utilisation: float = UTILISATION_CEILING) -> Rendered:  # fmt: skip
    """Every manifest for ``profile`` on ``hosts`` pods."""
    plan = HostPlan(profile.network.nodes, hosts, tuple(f"{NAME}-{i}" for i in range(hosts)))  # checks hosts against N
    network = network_plan(profile)
    resources = pod_resources(profile, hosts, cost, utilisation)
    addresses = service_names(namespace)
    common = ["--profile", f"{CONFIG_DIR}/{PROFILE_FILE}", "--hosts", str(hosts), "--addresses", addresses,
              "--base-port", str(DEFAULT_BASE_PORT), "--control-port", str(DEFAULT_CONTROL_PORT),
              "--genesis-dir", f"{CONFIG_DIR}/genesis"]  # fmt: skip
    labels = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/component": "validators"}
    genesis_text, keys_bytes = _genesis_files(network)
    files: dict[str, dict[str, Any]] = {
        "namespace.json": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        "configmap.json": _meta(
            "v1", "ConfigMap", f"{NAME}-config", namespace, data={PROFILE_FILE: profile_text, GENESIS_FILE: genesis_text}
        ),
        "secret.json": _meta(
            "v1", "Secret", f"{NAME}-keys", namespace, type="Opaque", data={KEYS_FILE: base64.b64encode(keys_bytes).decode()}
        ),
        "service.json": _service(namespace, labels, plan),
        "statefulset.json": _statefulset(namespace, labels, plan, image, resources, common),
        "coordinator-job.json": _job(namespace, image, common),
    }
    chaos, skipped = _chaos(profile, plan, namespace, labels)
    if chaos is not None:
        files[CHAOS_FILE] = chaos
    return Rendered(files, resources, plan, skipped)


def _genesis_files(network: NetworkPlan) -> tuple[str, bytes]:
    """genesis.json and genesis.keys.json as popbench writes them (harness/host/deploy.py, write_network)."""
    with tempfile.TemporaryDirectory(prefix="popbench-k8s-") as tmp:
        write_genesis(network.genesis, Path(tmp) / GENESIS_FILE)
        write_keys(network.keys, Path(tmp) / KEYS_FILE)
        return (Path(tmp) / GENESIS_FILE).read_text(), (Path(tmp) / KEYS_FILE).read_bytes()


def _meta(api: str, kind: str, name: str, namespace: str, **rest: Any) -> dict[str, Any]:
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": namespace}, **rest}


def _service(namespace: str, labels: dict[str, str], plan: HostPlan) -> dict[str, Any]:
    ports = [{"name": "control", "port": DEFAULT_CONTROL_PORT, "targetPort": DEFAULT_CONTROL_PORT}]
    ports += [{"name": f"v{k}", "port": DEFAULT_BASE_PORT + k} for k in range(plan.per_host)]
    # headless, and not-ready addresses published: a pod's name resolves once it is scheduled, before
    # its validators listen, so every host can resolve every other at start (plan.resolved)
    return _meta("v1", "Service", NAME, namespace,
                 spec={"clusterIP": "None", "publishNotReadyAddresses": True, "selector": labels, "ports": ports})  # fmt: skip


def _volumes() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes = [
        {"name": "config", "configMap": {"name": f"{NAME}-config", "items": [{"key": PROFILE_FILE, "path": PROFILE_FILE}]}},
        {"name": "genesis", "projected": {"sources": [
            {"configMap": {"name": f"{NAME}-config", "items": [{"key": GENESIS_FILE, "path": GENESIS_FILE}]}},
            {"secret": {"name": f"{NAME}-keys", "items": [{"key": KEYS_FILE, "path": KEYS_FILE}]}},
        ]}},
    ]  # fmt: skip
    mounts = [{"name": "config", "mountPath": CONFIG_DIR + "/" + PROFILE_FILE, "subPath": PROFILE_FILE, "readOnly": True},
              {"name": "genesis", "mountPath": CONFIG_DIR + "/genesis", "readOnly": True}]  # fmt: skip
    return volumes, mounts


def _statefulset(namespace: str, labels: dict[str, str], plan: HostPlan, image: str, resources: Resources,
                 common: list[str]) -> dict[str, Any]:  # fmt: skip
    volumes, mounts = _volumes()
    volumes.append({"name": "data", "emptyDir": {}})
    mounts.append({"name": "data", "mountPath": HOST_DIR})
    ports = [{"name": "control", "containerPort": DEFAULT_CONTROL_PORT}]
    ports += [{"name": f"v{k}", "containerPort": DEFAULT_BASE_PORT + k} for k in range(plan.per_host)]
    container = {
        "name": "host-supervisor", "image": image, "imagePullPolicy": "IfNotPresent",
        "command": ["popbench", "host-supervisor", *common, "--bind", "$(POD_IP)", "--output", HOST_DIR, "--linger"],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "ports": ports, "resources": resources.spec(), "volumeMounts": mounts,
        "readinessProbe": {"tcpSocket": {"port": DEFAULT_CONTROL_PORT}, "periodSeconds": 2},
    }  # fmt: skip
    anti = {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": labels}, "topologyKey": "kubernetes.io/hostname"}]}  # fmt: skip
    return _meta("apps/v1", "StatefulSet", NAME, namespace, spec={
        "serviceName": NAME, "replicas": plan.hosts, "podManagementPolicy": "Parallel",
        "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels}, "spec": {
            "affinity": {"podAntiAffinity": anti}, "terminationGracePeriodSeconds": 30,
            "containers": [container], "volumes": volumes}},
    })  # fmt: skip


def _job(namespace: str, image: str, common: list[str]) -> dict[str, Any]:
    volumes, mounts = _volumes()
    volumes.append({"name": "reports", "emptyDir": {}})
    mounts.append({"name": "reports", "mountPath": REPORT_DIR})
    coordinator = Resources(COORDINATOR_CPU_MILLI, COORDINATOR_MIB)
    container = {
        "name": "coordinator", "image": image, "imagePullPolicy": "IfNotPresent",
        "command": ["popbench", "coordinate", *common, "--output", f"{REPORT_DIR}/run", "--hold-after-s", f"{HOLD_AFTER_S:g}"],
        "resources": coordinator.spec(), "volumeMounts": mounts,
    }  # fmt: skip
    labels = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/component": "coordinator"}
    return _meta("batch/v1", "Job", f"{NAME}-coordinator", namespace, spec={
        "backoffLimit": 0,
        "template": {"metadata": {"labels": labels}, "spec": {"restartPolicy": "Never", "containers": [container], "volumes": volumes}},
    })  # fmt: skip


# -- faults: one chaos-mesh Workflow ------------------------------------------------------------------------
def _chaos(profile: Profile, plan: HostPlan, namespace: str, labels: dict[str, str]) -> tuple[dict[str, Any] | None, list[str]]:
    """The profile's timed faults as one Workflow: each fault a serial branch (wait until its time, then the
    chaos for its duration). A fault hits the pods holding its validators: a pod is K validators."""
    branches: list[str] = []
    templates: list[dict[str, Any]] = []
    skipped: list[str] = []
    for index, fault in enumerate(profile.faults):
        chaos = _fault_chaos(fault, index, profile, plan, namespace, labels)
        if isinstance(chaos, str):
            skipped.append(f"fault {index} ({fault.kind}): {chaos}")
            continue
        kind, spec, duration_s = chaos
        wait, act = f"wait-{index}", f"fault-{index}-{fault.kind}"
        templates.append({"name": wait, "templateType": "Suspend", "deadline": _seconds(fault.at_s)})  # at_s: from the window start
        entry: dict[str, Any] = {"name": act, "templateType": kind, _field(kind): spec}
        if duration_s:
            entry["deadline"] = _seconds(duration_s)
        templates.append(entry)
        branch = f"branch-{index}"
        templates.append({"name": branch, "templateType": "Serial", "children": [wait, act]})
        branches.append(branch)
    if not branches:
        return None, skipped
    templates.insert(0, {"name": "faults", "templateType": "Parallel", "children": branches})
    workflow = _meta(CHAOS_GROUP, "Workflow", f"{NAME}-faults", namespace, spec={"entry": "faults", "templates": templates})
    return workflow, skipped


def _field(kind: str) -> str:
    return kind[0].lower() + kind[1:]  # NetworkChaos -> networkChaos, as a Workflow template names it


def _seconds(value: float) -> str:
    return f"{max(1, math.ceil(value))}s"


def _pods(nodes: list[int], plan: HostPlan, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    pods = sorted({f"{NAME}-{plan.host_of(n)}" for n in nodes})
    return {"pods": {namespace: pods}} if pods else {"namespaces": [namespace], "labelSelectors": labels}


def _fault_chaos(fault: Fault, index: int, profile: Profile, plan: HostPlan, namespace: str,
                 labels: dict[str, str]) -> tuple[str, dict[str, Any], float] | str:  # fmt: skip
    n = profile.network.nodes
    if fault.kind == FaultKind.BYZANTINE:
        return "not timed: the validator runs that behaviour from its start (its config), in the pod as on one host"
    if fault.target == "leader":
        return "targets the current leader, which only the run knows: not rendered (name a node)"
    nodes = resolve_nodes(fault, index, n, profile.run.seed)
    selector = _pods(nodes, plan, namespace, labels)
    if fault.kind == FaultKind.KILL:
        return "PodChaos", {"action": "pod-kill", "mode": "all", "selector": selector}, 0.0
    if fault.kind == FaultKind.PAUSE:
        return (
            "PodChaos",
            {"action": "pod-failure", "mode": "all", "selector": selector, "duration": _seconds(fault.duration_s)},
            fault.duration_s,
        )
    if fault.kind == FaultKind.PARTITION:
        side_a, side_b = partition_sides(fault, nodes, n)
        pods_a = {plan.host_of(x) for x in side_a}
        pods_b = {plan.host_of(x) for x in side_b}
        if pods_a & pods_b or not pods_b:
            return (
                f"its sides share pods {sorted(pods_a & pods_b)} (a pod holds {plan.per_host} validators): render on hosts that split them"
            )
        cut = {"action": "partition", "mode": "all", "direction": "both", "selector": _pods(side_a, plan, namespace, labels),
                "target": {"mode": "all", "selector": {"pods": {namespace: sorted(f"{NAME}-{p}" for p in pods_b)}}}}  # fmt: skip
        return "NetworkChaos", cut | ({"duration": _seconds(fault.duration_s)} if fault.duration_s else {}), fault.duration_s
    if fault.kind == FaultKind.LINK:
        spec: dict[str, Any] = {"action": "delay" if fault.delay_ms or fault.jitter_ms else "loss", "mode": "all", "selector": selector}
        if fault.delay_ms or fault.jitter_ms:
            spec["delay"] = {"latency": f"{fault.delay_ms:g}ms", "jitter": f"{fault.jitter_ms:g}ms", "correlation": "0"}
        if fault.loss:
            spec["loss"] = {"loss": f"{fault.loss * 100:g}", "correlation": "0"}
        if fault.rate_kbit and spec["action"] == "loss" and not fault.loss:
            spec["action"] = "bandwidth"
            spec["bandwidth"] = {"rate": f"{fault.rate_kbit:g}kbps", "limit": 20971520, "buffer": 10000}
        if fault.duration_s:
            spec["duration"] = _seconds(fault.duration_s)
        return "NetworkChaos", spec, fault.duration_s
    if fault.kind == FaultKind.RESTART:
        return "a StatefulSet restarts a killed pod itself: a kill's restart is Kubernetes's own"
    return f"{fault.kind} has no chaos-mesh mapping here (TimeChaos/IOChaos need chaos-mesh's daemon in the pod): not rendered"


def summary(rendered: Rendered) -> dict[str, Any]:
    return {"hosts": rendered.plan.hosts, "validators_per_pod": rendered.plan.per_host, "files": sorted(rendered.files),
            "pod_cpu_request_milli": rendered.resources.cpu_milli, "pod_memory_request_mib": rendered.resources.memory_mib,
            "skipped_faults": rendered.skipped}  # fmt: skip


def dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
