"""Genesis values must fit the wire: a node id is a u32, a stake or balance a u64 (docs/protocol.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from popbench.errors import ConfigError
from popbench.genesis import genesis_from_dict, make_genesis


def first_balance(data: dict[str, Any]) -> str:
    return next(iter(data["balances"]))


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda d: d["validators"][0].update(node_id=2**32), "validators[0].node_id"),
        (lambda d: d["validators"][0].update(stake=2**64), "validators[0].stake"),
        (lambda d: d["balances"].update({first_balance(d): 2**64}), "balances."),
    ],
    ids=["node-id-over-u32", "stake-over-u64", "balance-over-u64"],
)
def test_a_value_the_wire_cannot_carry_is_refused_naming_its_key(edit: Callable[[dict[str, Any]], None], key: str) -> None:
    data = make_genesis(1)[0].to_json_dict()
    edit(data)
    with pytest.raises(ConfigError, match="must be at most") as caught:
        genesis_from_dict(data, "big.json")
    assert key in str(caught.value)


def test_the_largest_values_the_wire_carries_are_accepted() -> None:
    data = make_genesis(1)[0].to_json_dict()
    data["validators"][0].update(node_id=2**32 - 1, stake=2**64 - 1)
    data["balances"][first_balance(data)] = 2**64 - 1
    genesis = genesis_from_dict(data, "max.json")
    assert genesis.validators[0].node_id == 2**32 - 1
