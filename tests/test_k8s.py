"""`popbench deploy k8s`: the shipped profiles rendered and validated offline against the Kubernetes
schemas (kubernetes-validate bundles them; no cluster), a broken manifest refused, and the chaos-mesh
Workflow checked structurally (its CRD schemas ship in no package here)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from harness.cli.main import main
from harness.multihost import k8s
from harness.multihost.plan import HostPlan, expand_names
from harness.profile import PROFILES_DIR, load_profile, profile_from_dict, profile_path
from popbench.errors import ConfigError

kubernetes_validate = pytest.importorskip("kubernetes_validate")
K8S_VERSIONS = ("1.29.0", "1.32.0")
SHIPPED_PBFT = sorted(p.stem for p in PROFILES_DIR.glob("*.toml") if load_profile(p.stem).network.consensus == "pbft")
CHAOS_TEMPLATE_TYPES = {"Suspend", "Serial", "Parallel", "NetworkChaos", "PodChaos"}


def rendered(name: str, hosts: int) -> k8s.Rendered:
    return k8s.render(load_profile(name), profile_path(name).read_text(), hosts)


def hosts_for(name: str) -> int:
    nodes = load_profile(name).network.nodes
    hosts = min(4, nodes)
    while hosts > 1:  # as many as 4 pods, none left empty (HostPlan refuses that)
        try:
            HostPlan(nodes, hosts, tuple(str(i) for i in range(hosts)))
            return hosts
        except ConfigError:
            hosts -= 1
    return 1


def validate(resource: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(resource, version, strict=True)


@pytest.mark.parametrize("name", SHIPPED_PBFT)
def test_every_shipped_pbft_profile_renders_to_manifests_the_schemas_accept(name: str) -> None:
    out = rendered(name, hosts_for(name))
    for file, resource in out.files.items():
        if file == k8s.CHAOS_FILE:
            continue
        for version in K8S_VERSIONS:
            validate(resource, version)  # raises ValidationError naming the field


def test_testnet_100_on_4_hosts_runs_25_validators_a_pod_named_by_the_headless_service(tmp_path: Path) -> None:
    out = rendered("testnet-100", 4)
    stateful = out.files["statefulset.json"]
    spec = stateful["spec"]
    assert spec["replicas"] == 4 and spec["podManagementPolicy"] == "Parallel" and spec["serviceName"] == "popbench"
    pod = spec["template"]["spec"]
    assert (
        pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] == "kubernetes.io/hostname"
    )
    [container] = pod["containers"]
    command = container["command"]
    assert command[:2] == ["popbench", "host-supervisor"] and "--ordinal" not in command  # from the pod's hostname
    pattern = command[command.index("--addresses") + 1]
    assert expand_names(pattern, 4)[3] == "popbench-3.popbench.popbench.svc.cluster.local"
    assert len([p for p in container["ports"] if p["name"].startswith("v")]) == 25
    service = out.files["service.json"]["spec"]
    assert service["clusterIP"] == "None" and service["publishNotReadyAddresses"] is True
    requests = container["resources"]["requests"]
    assert requests == {"cpu": f"{out.resources.cpu_milli}m", "memory": f"{out.resources.memory_mib}Mi"}
    # the model's figure: 100 proofs/s x CPU ms per proof at N = 100, batch 10, within the 70 % ceiling, a quarter a pod
    batch = 100.0 * 100 / 1000
    cores = 100.0 * k8s.DOCUMENTED_COST.cpu_ms_per_proof(100, batch) / 700.0
    assert out.resources.cpu_milli == pytest.approx(cores * 1000 / 4, abs=1)
    job = out.files["coordinator-job.json"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert job[:2] == ["popbench", "coordinate"] and job[job.index("--hosts") + 1] == "4"
    written = out.write(tmp_path)
    kustomization = (tmp_path / "kustomization.yaml").read_text()
    assert all(f"  - {name}\n" in kustomization for name in out.files)
    assert {p.name for p in written} == {*out.files, "kustomization.yaml"}


def test_a_collector_profile_takes_the_collector_paths_cost_not_the_all_to_all_fit() -> None:
    profile = load_profile("testnet-1000")
    assert k8s.documented_cost(profile) is k8s.DOCUMENTED_COLLECTOR_COST
    assert k8s.documented_cost(load_profile("testnet-100")) is k8s.DOCUMENTED_COST
    # 10 proofs/s, batch 10: 0.1035 x 1000 + 18,170 / 10 = 1,920.5 ms a proof, 27.4 cores at 70 %, 143 of 1000 a pod
    collector = k8s.pod_resources(profile, 7)
    assert collector.cpu_milli == math.ceil(10.0 * 1920.5 / 700.0 * 1000 * 143 / 1000)
    all_to_all = k8s.pod_resources(profile, 7, k8s.DOCUMENTED_COST)
    assert all_to_all.cpu_milli > 5 * collector.cpu_milli  # the N^2 term the collector path does not pay


def test_without_hosts_the_command_renders_the_planners_host_count(tmp_path: Path) -> None:
    profile = load_profile("testnet-1000")
    assert k8s.cores_needed(profile) == pytest.approx(10.0 * 1920.5 / 700.0)  # 27.4 cores
    assert [k8s.planned_hosts(profile, cores) for cores in (2, 4, 64)] == [14, 7, 1]
    assert k8s.planned_hosts(load_profile("smoke"), 1, k8s.DocumentedCost(d_ms_per_block=1e9)) == 4  # never more hosts than validators
    result = CliRunner().invoke(main, ["deploy", "k8s", "--profile", "testnet-1000", "--cores-per-host", "2", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "need 27.4 cores kept at most 70% busy: 14 hosts of 2 cores" in result.output
    assert json.loads((tmp_path / "statefulset.json").read_text())["spec"]["replicas"] == 14


def test_the_genesis_and_keys_in_the_config_are_the_profiles_own() -> None:
    out = rendered("smoke", 2)
    genesis = json.loads(out.files["configmap.json"]["data"]["genesis.json"])
    assert len(genesis["validators"]) == 4
    assert "genesis.keys.json" in out.files["secret.json"]["data"]


def test_a_broken_manifest_is_refused() -> None:
    good = rendered("smoke", 2).files["statefulset.json"]
    broken = copy.deepcopy(good)
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken, "1.32.0")
    misspelt = copy.deepcopy(good)
    misspelt["spec"]["template"]["spec"]["containers"][0]["resurces"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(misspelt, "1.32.0")


FAULTS = """
name = "k8s-faults"
[network]
nodes = 8
[run]
duration_s = 60.0
[[faults]]
at_s = 10.0
kind = "partition"
target = "halves"
duration_s = 5.0
[[faults]]
at_s = 20.0
kind = "link"
target = "node:5"
delay_ms = 80.0
jitter_ms = 10.0
duration_s = 8.0
[[faults]]
at_s = 30.0
kind = "kill"
target = "node:1"
[[faults]]
at_s = 40.0
kind = "pause"
target = "node:7"
duration_s = 4.0
[[faults]]
at_s = 50.0
kind = "clock-skew"
target = "node:2"
offset_ms = 500.0
duration_s = 3.0
"""


def test_faults_become_one_chaos_mesh_workflow_of_network_and_pod_chaos() -> None:
    import tomllib

    profile = profile_from_dict(tomllib.loads(FAULTS), "faults.toml")
    out = k8s.render(profile, FAULTS, 4)
    workflow = out.files[k8s.CHAOS_FILE]
    assert workflow["apiVersion"] == "chaos-mesh.org/v1alpha1" and workflow["kind"] == "Workflow"
    templates = {t["name"]: t for t in workflow["spec"]["templates"]}
    assert len(templates) == len(workflow["spec"]["templates"])  # names unique
    entry = templates[workflow["spec"]["entry"]]
    assert entry["templateType"] == "Parallel"
    for template in templates.values():  # structure: every type known, every child defined, each chaos spec under its field
        assert template["templateType"] in CHAOS_TEMPLATE_TYPES, template
        assert all(child in templates for child in template.get("children", []))
        if template["templateType"].endswith("Chaos"):
            spec = template[k8s._field(template["templateType"])]
            assert spec["mode"] == "all" and spec["selector"]
    kinds = {name.split("-", 2)[2]: t for name, t in templates.items() if name.startswith("fault-")}
    assert sorted(kinds) == ["kill", "link", "partition", "pause"]
    partition = kinds["partition"]["networkChaos"]
    assert partition["action"] == "partition" and partition["selector"]["pods"]["popbench"] == ["popbench-0", "popbench-1"]
    assert partition["target"]["selector"]["pods"]["popbench"] == ["popbench-2", "popbench-3"] and kinds["partition"]["deadline"] == "5s"
    delay = kinds["link"]["networkChaos"]
    assert delay["action"] == "delay" and delay["delay"]["latency"] == "80ms" and delay["selector"]["pods"]["popbench"] == ["popbench-2"]
    assert kinds["kill"]["podChaos"]["action"] == "pod-kill" and kinds["pause"]["podChaos"]["action"] == "pod-failure"
    assert templates["wait-2"] == {"name": "wait-2", "templateType": "Suspend", "deadline": "30s"}
    assert [s for s in out.skipped if "clock-skew" in s]
    assert k8s.CHAOS_FILE not in out.kustomized()


def test_the_command_writes_the_directory_and_refuses_bad_input(tmp_path: Path) -> None:
    runner = CliRunner()
    done = runner.invoke(main, ["deploy", "k8s", "--profile", "smoke", "--hosts", "2", "--output", str(tmp_path / "out")])
    assert done.exit_code == 0, done.output
    assert "4 validators on 2 pods, 2 a pod" in done.output and (tmp_path / "out" / "statefulset.json").exists()
    refused = runner.invoke(main, ["deploy", "k8s", "--profile", "smoke", "--hosts", "0", "--output", str(tmp_path / "x")])
    assert refused.exit_code != 0 and "--hosts" in refused.output
    too_many = runner.invoke(main, ["deploy", "k8s", "--profile", "smoke", "--hosts", "5", "--output", str(tmp_path / "y")])
    assert too_many.exit_code != 0 and "hosts" in too_many.output


def test_the_documented_cost_is_the_capacity_models_formula() -> None:
    from harness.capacity.model import DEFAULT_UTILISATION_CEILING, Coefficients

    cost = k8s.DOCUMENTED_COST
    fitted = Coefficients(a_ms_per_proof_per_node=cost.a_ms_per_proof_per_node, b_ms_per_block_per_node2=cost.b_ms_per_block_per_node2,
                          c_ms_per_block_per_node=cost.c_ms_per_block_per_node, d_ms_per_block=cost.d_ms_per_block)  # fmt: skip
    assert cost.cpu_ms_per_proof(150, 12.0) == pytest.approx(fitted.cpu_ms_per_proof(150, 12.0))
    assert k8s.UTILISATION_CEILING == DEFAULT_UTILISATION_CEILING
