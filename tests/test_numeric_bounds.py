"""Every number a user gives is held to its range: each numeric profile key (harness/profile.py, Bound)
and each numeric option of every command (harness/cli/numeric.py), refused with the key or the option
named, before anything runs. ``--rate -10`` once ran and scored 89.9 B ("no submission load")."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, get_type_hints

import click
import pytest
from click.testing import CliRunner

from harness.cli import commands
from harness.cli.main import main
from harness.cli.numeric import BoundedNumber
from harness.profile import BOUND_KEY, SECTIONS, Fault, key_bound, load_profile, profile_from_dict
from popbench.errors import ConfigError


# -- profile keys -----------------------------------------------------------------------------------------
def test_every_numeric_profile_key_declares_its_range() -> None:
    for cls in [*SECTIONS.values(), Fault]:
        hints = get_type_hints(cls)
        for item in dataclasses.fields(cls):
            numeric = hints[item.name] in (int, float, list[int], list[float])
            assert not numeric or BOUND_KEY in item.metadata, f"{cls.__name__}.{item.name} has no Bound"


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("workload", "rate", -10.0, "must be at least 0, got -10"),
        ("workload", "rate", float("nan"), "must be a finite number, got nan"),
        ("workload", "rate", float("inf"), "must be a finite number, got inf"),
        ("workload", "drivers", 0, "must be at least 1, got 0"),
        ("workload", "in_flight", 0, "must be at least 1, got 0"),
        ("workload", "steps", [100.0, -5.0], "must be at least 0, got -5"),
        ("workload", "work_bits", 65, "must be in [0, 64], got 65"),
        ("workload", "payload_bytes", 2000, "must be in [0, 1024], got 2000"),
        ("workload", "invalid_fraction", 1.5, "must be in [0, 1], got 1.5"),
        ("network", "nodes", -3, "must be at least 1, got -3"),
        ("network", "degree", 0, "must be at least 1, got 0"),
        ("consensus", "batch_size", 0, "must be at least 1, got 0"),
        ("consensus", "min_work_bits", 70, "must be in [0, 64], got 70"),
        ("miners", "count", -1, "must be at least 0, got -1"),
        ("miners", "block_interval_ms", 0, "must be at least 1, got 0"),
        ("miners", "mining_nodes", [-1], "must be at least 0, got -1"),
        ("run", "duration_s", 0.0, "must be at least 0.1, got 0"),
        ("run", "warmup_s", -1.0, "must be at least 0, got -1"),
        ("run", "seed", -1, "must be in [0, 9223372036854775807], got -1"),
        ("run", "seed", 2**64, "must be in [0, 9223372036854775807]"),
        ("run", "ready_timeout_s", 0.0, "must be above 0, got 0"),
        ("score", "min_score", 101.0, "must be in [0, 100], got 101"),
        ("slo", "latency_ms", -1.0, "must be above 0, got -1"),
    ],
)
def test_a_profile_value_out_of_range_is_refused_naming_its_key(section: str, key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        profile_from_dict({section: {key: value}}, "test.toml")
    assert str(caught.value).startswith(f"test.toml: {section}.{key}: ") and message in str(caught.value), caught.value


def test_a_negative_rate_in_a_profile_file_is_refused_with_its_key(tmp_path: Path) -> None:
    path = tmp_path / "negative.toml"
    path.write_text('name = "negative"\n[workload]\nrate = -10.0\n')
    with pytest.raises(ConfigError, match=r"negative\.toml: workload\.rate: must be at least 0, got -10"):
        load_profile(str(path))


@pytest.mark.parametrize(("fault", "key"), [({"at_s": -1.0, "kind": "kill", "node": 0}, "faults[0].at_s"),
                                            ({"at_s": 1.0, "kind": "kill", "node": 9}, "faults.node")])  # fmt: skip
def test_a_fault_out_of_range_is_refused_naming_its_key(fault: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("[", r"\[").replace("]", r"\]")):
        profile_from_dict({"faults": [fault]}, "test.toml")


def test_keys_that_depend_on_each_other_are_checked_together() -> None:
    with pytest.raises(ConfigError, match=r"consensus\.view_timeout_max_ms: must be at least consensus\.view_timeout_ms"):
        profile_from_dict({"consensus": {"view_timeout_ms": 5000, "view_timeout_max_ms": 1000}}, "test.toml")
    with pytest.raises(ConfigError, match=r"miners\.mining_nodes: node 4 does not exist in a 4-node run"):
        profile_from_dict({"miners": {"mining_nodes": [0, 4]}}, "test.toml")


def test_a_flag_takes_the_range_of_the_key_it_overrides() -> None:
    assert key_bound("workload.rate")[0] is float and key_bound("network.nodes")[0] is int
    with pytest.raises(ConfigError, match="not a numeric profile key"):
        key_bound("network.topology")


# -- command-line options ---------------------------------------------------------------------------------
def every_option() -> list[tuple[str, click.Option]]:
    group = click.Group("popbench", commands=dict(main.commands))
    commands.register(group)
    found = []
    for name, command in group.commands.items():
        subcommands = command.commands.items() if isinstance(command, click.Group) else [(name, command)]
        for sub_name, sub in subcommands:
            label = name if sub_name == name else f"{name} {sub_name}"
            found += [(label, param) for param in sub.params if isinstance(param, click.Option)]
    return found


def test_no_numeric_option_of_any_command_goes_unbounded() -> None:
    unbounded = [f"{command} {option.opts[0]}" for command, option in every_option()
                 if isinstance(option.type, (click.types.IntParamType, click.types.FloatParamType))]  # fmt: skip
    assert unbounded == []  # every number goes through BoundedNumber (click's ranges let nan and inf through)
    assert sum(isinstance(option.type, BoundedNumber) for _, option in every_option()) >= 25


def invoke(*args: str) -> tuple[int, str]:
    done = CliRunner().invoke(main, list(args))
    return done.exit_code, done.output


@pytest.mark.parametrize(
    ("args", "option", "message"),
    [
        (["run", "--rate", "-10"], "--rate", "must be at least 0, got -10"),
        (["run", "--rate", "nan"], "--rate", "must be a finite number, got nan"),
        (["run", "--nodes", "-3"], "--nodes", "must be at least 1, got -3"),
        (["run", "--nodes", "4.5"], "--nodes", "'4.5' is not an integer"),
        (["run", "--drivers", "0"], "--drivers", "must be at least 1, got 0"),
        (["run", "--duration", "0"], "--duration", "must be at least 0.1, got 0"),
        (["run", "--in-flight", "0"], "--in-flight", "must be at least 1, got 0"),
        (["run", "--seed", "-1"], "--seed", "must be in [0, 9223372036854775807], got -1"),
        (["run", "--min-score", "101"], "--min-score", "must be in [0, 100], got 101"),
        (["run", "--repeat", "0"], "--repeat", "must be at least 1, got 0"),
        (["compare", "--alpha", "0", "a", "b"], "--alpha", "must be in (0, 1), got 0"),
        (["compare", "--alpha", "1.5", "a", "b"], "--alpha", "must be in (0, 1), got 1.5"),
        (["node", "--node-id", "-1"], "--node-id", "must be in [0, 4294967295], got -1"),
        (["node", "--listen-fd", "-1"], "--listen-fd", "must be at least 0, got -1"),
        (["join", "--node-id", "5", "--stake", "-1", "--bootstrap", "x:1", "--genesis", "g"], "--stake", "must be in [0, "),
        (["genesis", "--validators", "0", "--output", "g.json"], "--validators", "must be in [1, 4294967296], got 0"),
        (["genesis", "--validators", "2", "--stake", "-5", "--output", "g.json"], "--stake", "got -5"),
        (["sweep", "--profile", "capacity", "--nodes", "4", "--output", "o", "--target-rate", "0"], "--target-rate", "must be above 0"),
        (["sweep", "--profile", "capacity", "--nodes", "4", "--output", "o", "--probe-rate", "-1"], "--probe-rate", "must be above 0"),
        (["sweep", "--profile", "capacity", "--nodes", "4", "--output", "o", "--max-runs", "0"], "--max-runs", "must be at least 1"),
        (["sweep", "--profile", "capacity", "--nodes", "4", "--output", "o", "--min-sustained", "0"], "--min-sustained", "at least 1"),
        (["sweep", "--profile", "capacity", "--nodes", "4", "--output", "o", "--fit-max-nodes", "0"], "--fit-max-nodes", "at least 1"),
        (["sweep", "--profile", "capacity", "--nodes", "4", "--output", "o", "--cores-per-host", "0"], "--cores-per-host", "at least 1"),
        (["sweep", "--profile", "capacity", "--nodes", "4", "--output", "o", "--plan-batch", "0"], "--plan-batch", "must be above 0"),
        (["sweep", "--profile", "capacity", "--nodes", "4", "--output", "o", "--seed", "-1"], "--seed", "got -1"),
        (["sweep", "--profile", "capacity", "--nodes", "4", "--output", "o", "--rates", "50,inf"], "--rates", "must be a finite number"),
        (["sweep", "--profile", "capacity", "--nodes", "4,-8", "--output", "o"], "--nodes", "must be at least 1, got -8"),
        (["sweep", "--profile", "capacity", "--nodes", "4", "--output", "o", "--plan", "10@nan"], "--plan", "must be a finite number"),
    ],
)
def test_a_numeric_option_out_of_range_is_refused_naming_the_option(
    args: list[str], option: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may be written, and nothing is: the refusal comes before any work
    code, output = invoke(*args)
    assert code == 2, output
    assert f"Invalid value for '{option}'" in output and message in output, output
    assert list(tmp_path.iterdir()) == []


def test_a_node_config_file_is_held_to_the_node_id_range(tmp_path: Path) -> None:
    from harness.cli.node import config_from_options
    from popbench.genesis import make_genesis, write_genesis

    genesis, _ = make_genesis(1, seed="bounds")
    write_genesis(genesis, tmp_path / "g.json")
    for bad, message in ((-1, "must be in [0, 4294967295], got -1"), ("zero", "must be an integer, got 'zero'")):
        with pytest.raises(ConfigError, match=r"node_id: " + message.replace("[", r"\[").replace("]", r"\]")):
            config_from_options({"genesis": str(tmp_path / "g.json"), "node_id": bad, "data_dir": str(tmp_path / "d")})
