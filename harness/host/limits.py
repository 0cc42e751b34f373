"""Host limits: open files and memory for a run of N nodes, checked before anything is forked."""

from __future__ import annotations

import resource

import psutil

from popbench.errors import HarnessError

NODE_USS_ESTIMATE_MIB = 40  # per node; measured USS is in every report (resources.uss_mib)
FDS_PER_NODE_BASE = 16


def fds_needed(nodes: int, drivers: int) -> int:
    """Descriptors of the busiest process: the supervisor (a socket, a pipe and a status link per node)
    or a node of a full mesh (a link per peer, plus clients)."""
    supervisor = 3 * nodes + 4 * drivers + 64
    node = nodes + drivers + FDS_PER_NODE_BASE
    return max(supervisor, node)


def raise_open_files(needed: int) -> str:
    """Raise the soft RLIMIT_NOFILE towards the hard limit when ``needed``; a note of what was done."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if needed <= soft:
        return f"open files: {needed} needed, limit {soft}"
    ceiling = hard if hard != resource.RLIM_INFINITY else needed * 2
    if needed > ceiling:
        raise HarnessError(f"this run needs about {needed} open files per process but the hard limit is {hard}; "
                           f"raise it (ulimit -Hn) or run fewer nodes")  # fmt: skip
    new_soft = min(ceiling, max(needed * 2, soft))
    resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
    return f"open files: raised the soft limit from {soft} to {new_soft} (needed about {needed})"


def check_memory(nodes: int, per_node_mib: float = NODE_USS_ESTIMATE_MIB) -> str:
    available_mib = psutil.virtual_memory().available / 2**20
    needed_mib = nodes * per_node_mib
    if needed_mib > available_mib:
        raise HarnessError(f"{nodes} nodes need about {needed_mib:,.0f} MiB ({per_node_mib} MiB each) but only "
                           f"{available_mib:,.0f} MiB is available: run fewer nodes")  # fmt: skip
    return f"memory: about {needed_mib:,.0f} MiB needed of {available_mib:,.0f} MiB available"
