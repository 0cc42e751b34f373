"""The container path: the image built from Containerfile and the project's files, and a 4-validator
network run from it. Marked ``container``; skips, saying why, where docker cannot build or run here.

Offline (no registry for the base image or PyPI), point it at a local Debian bookworm image and a
wheelhouse of the dependencies: POPBENCH_IMAGE_BASE=popbench-base:bookworm POPBENCH_WHEELS=DIR
(docs/kubernetes.md, "The image").
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILES = ("pyproject.toml", "README.md", "Containerfile", ".dockerignore", "popbench", "harness", "profiles")
TAG = "popbench:test"
PROFILE = """
name = "container"
[network]
nodes = 4
[workload]
rate = 100.0
[run]
duration_s = 4.0
warmup_s = 1.0
cooldown_s = 0.5
status_interval_s = 0.5
drain_s = 5.0
seed = 5
"""


def docker_unavailable() -> str | None:
    if shutil.which("docker") is None:
        return "no docker command"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    return None if info.returncode == 0 else f"docker info failed: {(info.stderr or info.stdout).strip()[-300:]}"


def base_image() -> tuple[str, str | None]:
    """The base image and why it cannot be had (None: present, or pulled)."""
    base = os.environ.get("POPBENCH_IMAGE_BASE", "python:3.11-slim-bookworm")
    if subprocess.run(["docker", "image", "inspect", base], capture_output=True, timeout=60).returncode == 0:
        return base, None
    pulled = subprocess.run(["docker", "pull", base], capture_output=True, text=True, timeout=300)
    return base, None if pulled.returncode == 0 else f"base image {base} not here and not pulled: {pulled.stderr.strip()[-300:]}"


@pytest.mark.container
@pytest.mark.timeout(1200)
def test_the_image_builds_and_runs_a_committing_4_validator_network(tmp_path: Path) -> None:
    reason = docker_unavailable()
    if reason:
        pytest.skip(reason)
    base, reason = base_image()
    if reason:
        pytest.skip(reason)
    context = tmp_path / "context"
    context.mkdir()
    for name in PROJECT_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, context / name)
    build = ["docker", "build", "-f", "Containerfile", "-t", TAG, "--build-arg", f"BASE={base}"]
    wheels = os.environ.get("POPBENCH_WHEELS")
    if wheels:
        shutil.copytree(wheels, context / "wheels", ignore=shutil.ignore_patterns("popbench-*.whl"))
        build += ["--network", "none", "--build-arg", "PIP_ARGS=--no-index --find-links /opt/popbench/wheels"]
    built = subprocess.run([*build, str(context)], capture_output=True, text=True, timeout=1200)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    out = tmp_path / "out"
    out.mkdir()
    (out / "container.toml").write_text(PROFILE)
    ran = subprocess.run(["docker", "run", "--rm", "--network", "none", "-v", f"{out}:/out", TAG,
                          "popbench", "run", "--profile", "/out/container.toml", "--output", "/out/run"],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    report = orjson.loads((out / "run" / "report.json").read_bytes())
    metrics = report["metrics"]
    assert report["status"] == "complete"
    assert metrics["throughput"]["valid_committed"] == metrics["throughput"]["valid_submitted"] > 0
    assert metrics["stability"]["safety"]["agree"] and metrics["stability"]["safety"]["nodes_checked"] == 4
