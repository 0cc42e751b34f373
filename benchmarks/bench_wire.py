"""pyperf micro benchmark of the wire codec: one benchmark per message type.

Each benchmark times a full round trip of one representative message (benchmarks/wire_samples.py):
``encode_frame`` (which encodes the body) then ``FrameDecoder.feed`` (which decodes the header and the
body). ``--split`` adds four benchmarks per type (encode body, decode body, encode frame, decode frame);
that run takes several minutes. After the run the parent prints a table of frames/s and MB/s.

    .venv/bin/python benchmarks/bench_wire.py --fast            # ~20 s on 2 idle cores
    .venv/bin/python benchmarks/bench_wire.py --split -o wire.json
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import pyperf
from wire_samples import SAMPLES

from popbench.wire import HEADER_BYTES, FrameDecoder, Message, decode_message, encode_frame

# Fewer, shorter runs than pyperf's defaults: 29 benchmarks must fit in well under a minute with --fast
# (which takes half of PROCESSES, at least 3). Pass -p/-n/--min-time for a rigorous run.
PROCESSES = 6
VALUES_PER_PROCESS = 3
MIN_TIME_S = 0.02


def round_trip(message: Message) -> None:
    FrameDecoder().feed(encode_frame(message))


def split_operations(message: Message) -> dict[str, Callable[[], Any]]:
    """The four steps of a round trip, each as a zero-argument call."""
    body = message.encode_body()
    frame = encode_frame(message)
    message_type = message.TYPE
    return {
        "encode body": message.encode_body,
        "decode body": lambda: decode_message(message_type, body),
        "encode frame": lambda: encode_frame(message),
        "decode frame": lambda: FrameDecoder().feed(frame),
    }


def forward_options(cmd: list[str], args: argparse.Namespace) -> None:
    if args.split:
        cmd.append("--split")


def make_runner() -> pyperf.Runner:
    runner = pyperf.Runner(processes=PROCESSES, values=VALUES_PER_PROCESS, min_time=MIN_TIME_S, add_cmdline_args=forward_options)
    runner.argparser.add_argument("--split", action="store_true", help="also time body and frame steps apart")
    runner.metadata["description"] = "popbench wire codec: encode + decode of one frame per message type"
    return runner


def run_benchmarks(runner: pyperf.Runner) -> dict[str, tuple[pyperf.Benchmark | None, int]]:
    """Run every benchmark; return name -> (result, frame bytes)."""
    results: dict[str, tuple[pyperf.Benchmark | None, int]] = {}
    split = runner.parse_args().split
    for cls, message in SAMPLES.items():
        frame_bytes = len(encode_frame(message))
        name = f"wire {cls.__name__} round trip"
        results[name] = (runner.bench_func(name, round_trip, message), frame_bytes)
        if split:
            for step, call in split_operations(message).items():
                step_name = f"wire {cls.__name__} {step}"
                results[step_name] = (runner.bench_func(step_name, call), frame_bytes)
    return results


def print_table(results: dict[str, tuple[pyperf.Benchmark | None, int]]) -> None:
    rows = [(name, bench.mean(), size) for name, (bench, size) in results.items() if bench is not None]
    print(f"\n{'benchmark':<40} {'frame B':>9} {'ns/op':>10} {'ops/s':>12} {'MB/s':>9}")
    for name, mean_s, size in rows:
        print(f"{name:<40} {size:>9} {mean_s * 1e9:>10.0f} {1 / mean_s:>12,.0f} {size / mean_s / 1e6:>9.1f}")
    print(f"(frame bytes include the {HEADER_BYTES}-byte header)")


def main() -> None:
    runner = make_runner()
    results = run_benchmarks(runner)
    if not runner.args.worker:  # workers hold partial results; only the parent has every benchmark
        print_table(results)


if __name__ == "__main__":
    main()
