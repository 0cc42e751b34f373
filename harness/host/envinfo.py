"""Environment metadata for a report: the machine, the software and the code that produced the numbers."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

PACKAGES = ("popbench", "uvloop", "orjson", "psutil", "ecdsa", "coincurve", "pyperf", "tabulate", "click")
REPO_ROOT = Path(__file__).resolve().parent.parent
GIT_TIMEOUT_S = 5.0


def usable_cores() -> int:
    """The cores this process may use (its CPU affinity): the host the planner assumes when none is named."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def environment() -> dict[str, Any]:
    memory = psutil.virtual_memory()
    return {
        "cpu_model": cpu_model(), "cores_logical": psutil.cpu_count(), "cores_physical": psutil.cpu_count(logical=False),
        "memory_gib": round(memory.total / 2**30, 1), "os": platform.platform(), "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(), "packages": package_versions(), "git": git_state(),
    }  # fmt: skip


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_state() -> dict[str, Any]:
    commit = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(dirty) if dirty is not None else None}


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
