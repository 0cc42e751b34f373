"""Frames per second through a real loopback TCP stream: a sender process, a FramedProtocol receiver.

The receiver, this process, runs :class:`FramedProtocol` on uvloop and decodes every frame. The sender
is a child process of this script, in one of two modes:

- ``framed``: a FramedProtocol on uvloop builds and ``send``s every message, BATCH_FRAMES per loop
  iteration, so they are encoded one by one and coalesced into one write (what a node does);
- ``raw``: pre-encoded frames joined into one batch, written over and over with blocking ``sendall``;
  the sender costs almost nothing, so this measures the receiver alone.

The rate is measured from the first byte received to the last frame decoded. Each case runs REPEATS
times, a fresh sender and connection each time; the median and the spread (min..max) are printed, with
each side's CPU use so the bottleneck is visible (locust's lesson: a load generator that saturates its
own core measures itself).

    .venv/bin/python benchmarks/bench_wire_stream.py            # 200,000 frames per run
    .venv/bin/python benchmarks/bench_wire_stream.py --fast     # 50,000 frames per run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import uvloop
from wire_samples import hash_of, small_status

from popbench.wire import FramedProtocol, Message, Prepare, Status, encode_frame

REPEATS = 5
FRAMES_PER_RUN = 200_000
FAST_FRAMES_PER_RUN = 50_000
BATCH_FRAMES = 1_000  # distinct frames per write; the sender repeats the batch
RUN_TIMEOUT_S = 120.0
SENDER_EXIT_TIMEOUT_S = 10.0
SENDER_MODES = ("framed", "raw")
TARGET_FRAMES_PER_S = {"status": 100_000, "prepare": 200_000}  # what this machine should beat


def status_frame(index: int) -> Message:
    return Status({**small_status(), "height": index, "last_commit_ns": 1_700_000_000_000_000_000 + index})


def prepare_frame(index: int) -> Message:
    return Prepare(4, index, hash_of(index), index % 100, bytes(64))


CASES: dict[str, tuple[str, Callable[[int], Message]]] = {
    "status": ("small orjson STATUS", status_frame),
    "prepare": ("struct-packed PREPARE", prepare_frame),
}


# -- the sender process ----------------------------------------------------------------------------


def encoded_batch(kind: str) -> bytes:
    make = CASES[kind][1]
    return b"".join(encode_frame(make(index)) for index in range(BATCH_FRAMES))


def send_raw(port: int, kind: str, frames: int) -> None:
    """Write ``frames`` pre-encoded frames with blocking sendall."""
    batch = encoded_batch(kind)
    whole_batches, rest = divmod(frames, BATCH_FRAMES)
    tail = b"".join(encode_frame(CASES[kind][1](index)) for index in range(rest))
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for _ in range(whole_batches):
            sock.sendall(batch)
        sock.sendall(tail)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)  # wait for the receiver to close: it has every frame


class SendingProtocol(FramedProtocol):
    """A sender that honours the transport's flow control instead of buffering without bound."""

    def __init__(self) -> None:
        super().__init__()
        self.writable = asyncio.Event()
        self.writable.set()
        self.lost = asyncio.get_running_loop().create_future()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def message_received(self, message: Message) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.writable.set()
        if not self.lost.done():
            self.lost.set_result(None)


async def send_framed(port: int, kind: str, frames: int) -> None:
    """Build and send every message through FramedProtocol.send, BATCH_FRAMES per loop iteration."""
    make = CASES[kind][1]
    _, sender = await asyncio.get_running_loop().create_connection(SendingProtocol, "127.0.0.1", port)
    for start in range(0, frames, BATCH_FRAMES):
        for index in range(start, min(start + BATCH_FRAMES, frames)):
            sender.send(make(index))
        await asyncio.sleep(0)  # a yield: the flush that send scheduled writes the batch
        await sender.writable.wait()
    await sender.lost  # the receiver closes once it has every frame


def send_frames(port: int, kind: str, frames: int, mode: str) -> None:
    """Child process: write ``frames`` frames to the receiver, then report CPU seconds on stdout."""
    cpu_start_s = time.process_time()
    if mode == "raw":
        send_raw(port, kind, frames)
    else:
        uvloop.run(send_framed(port, kind, frames))
    print(json.dumps({"cpu_s": time.process_time() - cpu_start_s}))


# -- the receiver ----------------------------------------------------------------------------------


class CountingReceiver(FramedProtocol):
    """Decodes every frame, keeps none; resolves ``done`` when ``expected`` frames have arrived."""

    def __init__(self, expected: int, done: asyncio.Future[int]) -> None:
        super().__init__()
        self.expected = expected
        self.done = done
        self.first_byte_ns = 0
        self.cpu_start_s = 0.0

    def data_received(self, data: bytes) -> None:
        if not self.first_byte_ns:
            self.first_byte_ns = time.perf_counter_ns()
            self.cpu_start_s = time.process_time()
        super().data_received(data)
        if self.frames_in >= self.expected and not self.done.done():
            self.done.set_result(time.perf_counter_ns())
            self.close()

    def message_received(self, message: Message) -> None:
        pass  # decoding is what is measured; FramedProtocol counts frames_in

    def protocol_error(self, error: Exception) -> None:  # type: ignore[override]
        if not self.done.done():
            self.done.set_exception(error)
        super().protocol_error(error)  # type: ignore[arg-type]


@dataclass
class RunResult:
    frames: int
    bytes_received: int
    elapsed_s: float
    receiver_cpu_s: float
    sender_cpu_s: float

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.elapsed_s


def spawn_sender(port: int, kind: str, frames: int, mode: str) -> subprocess.Popen[str]:
    command = [sys.executable, os.path.abspath(__file__), "--send", str(port), "--kind", kind,
               "--frames", str(frames), "--sender", mode]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def sender_cpu_s(sender: subprocess.Popen[str]) -> float:
    output, _ = sender.communicate(timeout=SENDER_EXIT_TIMEOUT_S)
    if sender.returncode != 0:
        raise RuntimeError(f"sender exited with {sender.returncode}")
    return float(json.loads(output.strip().splitlines()[-1])["cpu_s"])


async def receive_run(kind: str, frames: int, mode: str) -> RunResult:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()
    receivers: list[CountingReceiver] = []

    def new_receiver() -> CountingReceiver:
        receivers.append(CountingReceiver(frames, done))
        return receivers[-1]

    server = await loop.create_server(new_receiver, "127.0.0.1", 0)
    sender = spawn_sender(server.sockets[0].getsockname()[1], kind, frames, mode)
    try:
        end_ns = await asyncio.wait_for(done, RUN_TIMEOUT_S)
        receiver = receivers[0]
        cpu_s = time.process_time() - receiver.cpu_start_s
        elapsed_s = (end_ns - receiver.first_byte_ns) / 1e9
        return RunResult(receiver.frames_in, receiver.bytes_in, elapsed_s, cpu_s, sender_cpu_s(sender))
    finally:
        server.close()
        if sender.poll() is None:
            sender.kill()
            sender.wait()


def run_case(kind: str, frames: int, repeats: int, mode: str) -> list[RunResult]:
    results = []
    for _ in range(repeats):
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            results.append(runner.run(receive_run(kind, frames, mode)))
    return results


# -- report ----------------------------------------------------------------------------------------


def report(kind: str, mode: str, results: list[RunResult]) -> None:
    label = f"{CASES[kind][0]}, {mode} sender"
    rates = [result.frames_per_s for result in results]
    median = statistics.median(rates)
    frame_bytes = results[0].bytes_received / results[0].frames
    receiver_cpu = statistics.median(r.receiver_cpu_s / r.elapsed_s for r in results)
    sender_cpu = statistics.median(r.sender_cpu_s / r.elapsed_s for r in results)
    target = TARGET_FRAMES_PER_S[kind]
    print(f"{label}: {frame_bytes:.0f} B/frame, {results[0].frames:,} frames x {len(results)} runs")
    print(f"  frames/s   median {median:,.0f}  spread {min(rates):,.0f} .. {max(rates):,.0f}"
          f"  ({median * frame_bytes / 1e6:.1f} MB/s)")  # fmt: skip
    print(f"  CPU        receiver {receiver_cpu:.0%}  sender {sender_cpu:.0%} of one core")
    verdict = "beats" if median >= target else "MISSES"
    print(f"  target     {target:,} frames/s: {verdict}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help=f"{FAST_FRAMES_PER_RUN:,} frames per run")
    parser.add_argument("--frames", type=int, help="frames per run (overrides --fast)")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--kind", choices=sorted(CASES), action="append", help="a case to run (default: all)")
    parser.add_argument("--sender", choices=SENDER_MODES, action="append", help="sender mode (default: all)")
    parser.add_argument("--send", type=int, metavar="PORT", help=argparse.SUPPRESS)  # the child's mode
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    frames = args.frames or (FAST_FRAMES_PER_RUN if args.fast else FRAMES_PER_RUN)
    if args.send is not None:
        send_frames(args.send, args.kind[0], frames, args.sender[0])
        return
    load = os.getloadavg()[0]
    print(f"bench_wire_stream: loopback TCP, uvloop receiver, load average {load:.1f} on {os.cpu_count()} cores")
    if load > (os.cpu_count() or 1):
        print("  WARNING: the machine is busy; sender and receiver share cores with other work, figures are low")
    for kind in args.kind or list(CASES):
        for mode in args.sender or SENDER_MODES:
            report(kind, mode, run_case(kind, frames, args.repeats, mode))


if __name__ == "__main__":
    main()
