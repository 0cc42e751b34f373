"""`popbench deploy k8s`: a profile rendered to Kubernetes manifests (harness/multihost/k8s.py).

``kubectl apply -k DIR`` starts the validators (a StatefulSet of H pods) and the coordinator (a Job that
writes the report); ``kubectl apply -f DIR/chaos-workflow.json`` starts the profile's faults with the
load window. docs/kubernetes.md walks through it.
"""

from __future__ import annotations

from pathlib import Path

import click
import msgspec

from harness.capacity.model import DEFAULT_UTILISATION_CEILING, CostModel
from harness.cli import numeric
from harness.host.envinfo import usable_cores
from harness.multihost import k8s
from harness.profile import load_profile, profile_path
from popbench.errors import ConfigError


def register(group: click.Group) -> None:
    group.add_command(deploy_group)


@click.group("deploy")
def deploy_group() -> None:
    """Render a profile for an engine that runs it over several hosts."""


@deploy_group.command("k8s")
@click.option("--profile", "profile_name", required=True, help="Profile name in profiles/ or a TOML path.")
@click.option("--hosts", type=numeric.integer(1),
              help="H: pods (one per Kubernetes node), K = ceil(N/H) validators each (default: the planner's count for hosts of --cores-per-host).")  # fmt: skip
@click.option(
    "--cores-per-host",
    type=numeric.integer(1),
    help="The planner's host, when --hosts is not given (default: the cores this process may use).",
)
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), required=True, help="Directory for the manifests.")
@click.option("--namespace", default=k8s.DEFAULT_NAMESPACE, show_default=True, help="Namespace of every resource.")
@click.option("--image", default=k8s.DEFAULT_IMAGE, show_default=True, help="The image built from Containerfile.")
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A capacity sweep's fitted model (model.json) for the requests (default: docs/capacity.md's figures for the profile's vote path).")  # fmt: skip
def deploy_k8s_command(profile_name: str, hosts: int | None, cores_per_host: int | None, output: Path, namespace: str, image: str,
                       model: Path | None) -> None:  # fmt: skip
    """Render PROFILE on H pods: StatefulSet, headless Service, genesis ConfigMap and keys Secret, the
    coordinator Job, kustomization.yaml, and the profile's faults as a chaos-mesh Workflow."""
    profile = load_profile(profile_name)
    text = profile_path(profile_name).read_text()
    cost = load_model(model).coefficients if model else None  # None: the documented fit of the profile's vote path
    if hosts is None:
        cores = cores_per_host or usable_cores()
        hosts = k8s.planned_hosts(profile, cores, cost, DEFAULT_UTILISATION_CEILING)
        needed = k8s.cores_needed(profile, cost, DEFAULT_UTILISATION_CEILING)
        click.echo(f"planner: {profile.network.nodes} validators at {profile.workload.rate:g} proofs/s need {needed:.1f} cores "
                   f"kept at most {DEFAULT_UTILISATION_CEILING:.0%} busy: {hosts} hosts of {cores} cores")  # fmt: skip
    rendered = k8s.render(profile, text, hosts, namespace, image, cost, DEFAULT_UTILISATION_CEILING)
    written = rendered.write(output)
    plan, res = rendered.plan, rendered.resources
    click.echo(f"{profile.name}: {plan.nodes} validators on {plan.hosts} pods, {plan.per_host} a pod; "
               f"a pod requests {res.cpu_milli}m CPU and {res.memory_mib} MiB (limits x{k8s.LIMIT_FACTOR})")  # fmt: skip
    for path in written:
        click.echo(f"  {path}")
    for line in rendered.skipped:
        click.echo(f"  not rendered: {line}")
    click.echo(f"start: kubectl apply -k {output}   report: kubectl cp {namespace}/<coordinator pod>:{k8s.REPORT_DIR}/run ./run")


def load_model(path: Path) -> CostModel:
    """A capacity sweep's fitted model (a CostModel as JSON), for the requests."""
    try:
        return msgspec.json.decode(path.read_bytes(), type=CostModel)
    except (OSError, msgspec.ValidationError, msgspec.DecodeError) as err:
        raise ConfigError(f"not a capacity model: {err}", source=str(path), key="--model") from None
