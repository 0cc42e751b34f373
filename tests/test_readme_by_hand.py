"""The README's "A network by hand" block, run line by line with real processes.

The commands are read from README.md itself, so the README cannot drift from what works. Two
substitutions only: the console script's path (the README says `.venv/bin/popbench`, relative to a
clone) and the four listen ports (the README's fixed ports may be taken on a shared test host).
"""

from __future__ import annotations

import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.cluster import POPBENCH

pytestmark = pytest.mark.timeout(240)
README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "## A network by hand"
README_PORTS = (7100, 7101, 7102, 7103)
CONNECT_DEADLINE_S = 90.0
STOP_TIMEOUT_S = 30.0
STOP_ALL = "kill $(jobs -p)"


def by_hand_commands() -> list[str]:
    """The lines of the first ```sh block under the README's by-hand heading."""
    text = README.read_text()
    assert SECTION in text, f"README.md has no {SECTION!r} section"
    block = text.split(SECTION, 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip()]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def localise(line: str, ports: dict[int, int]) -> list[str]:
    for readme_port, port in ports.items():
        line = line.replace(f":{readme_port}", f":{port}")
    words = shlex.split(line)
    return [POPBENCH if word == ".venv/bin/popbench" else word for word in words]


def test_the_readme_block_has_the_shape_this_test_runs() -> None:
    commands = by_hand_commands()
    assert commands[-1] == STOP_ALL
    assert sum(" node " in c and c.endswith("&") for c in commands) == 4
    assert any(c.startswith(".venv/bin/popbench genesis --validators 4 ") for c in commands)
    assert any(c.startswith(".venv/bin/popbench status ") for c in commands)


def test_the_readme_network_by_hand_starts_links_and_stops(tmp_path: Path) -> None:
    ports = dict(zip(README_PORTS, free_ports(len(README_PORTS)), strict=True))
    background: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for line in by_hand_commands():
            if line == STOP_ALL:
                stop_all(background)
                continue
            run_line(localise(line, ports), tmp_path, background)
    finally:
        for proc, _ in background:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
    assert all(proc.returncode == 0 for proc, _ in background), [(proc.args, proc.returncode) for proc, _ in background]


def run_line(words: list[str], cwd: Path, background: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
    if words[-1] == "&":
        background.append(start_in_background(words[:-1], cwd))
    elif words[1:2] == ["status"]:
        wait_for_full_mesh(words, cwd, background)
    else:
        done = subprocess.run(words, cwd=cwd, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{shlex.join(words)} failed:\n{done.stderr}"


def start_in_background(words: list[str], cwd: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """`cmd > log 2>&1` without a shell: the test owns the process and can always stop it."""
    assert words[-3] == ">" and words[-1] == "2>&1", f"expected 'cmd > log 2>&1 &', got {words}"
    log_path = cwd / words[-2]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(words[:-3], cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    return proc, log_path


def wait_for_full_mesh(words: list[str], cwd: Path, background: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
    """What a person does: ask until the node reports its three peers (polled, with a deadline)."""
    deadline = time.monotonic() + CONNECT_DEADLINE_S
    while True:
        done = subprocess.run(words, cwd=cwd, capture_output=True, text=True, timeout=60)
        if done.returncode == 0 and peers_of(done.stdout) == 3:
            return
        for proc, log_path in background:
            assert proc.poll() is None, f"{proc.args!r} exited:\n{log_path.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no full mesh after {CONNECT_DEADLINE_S} s; last status:\n{done.stdout}{done.stderr}"
        time.sleep(0.5)  # polling period of a condition with a deadline


def peers_of(status_text: str) -> int | None:
    for line in status_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "peers":
            return int(value)
    return None


def stop_all(background: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
    for proc, _ in background:
        proc.send_signal(signal.SIGTERM)
    for proc, log_path in background:
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{proc.args!r} ignored SIGTERM:\n{log_path.read_text()[-3000:]}") from None
