"""Numeric options: one click type for every number a command takes, so each refuses what is out of range
the same way ("Invalid value for '--rate': must be at least 0, got -10"), before anything runs.

A flag that overrides a profile key takes that key's declared range (harness.profile, ``key_bound``), so
``--rate -10`` and ``rate = -10`` in a profile are refused alike. Click's own IntRange and FloatRange are
not used: a range test lets ``nan`` through (it compares false with everything) and ``inf`` past any
lower limit, and both would then run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from harness.profile import Bound, key_bound

NUMBER_NAMES = {int: "an integer", float: "a number"}

# Recent click types ParamType by the value it converts to; click 8.1, which pyproject allows, cannot be subscripted.
if TYPE_CHECKING:
    NumberParamType = click.ParamType[int | float]
else:
    NumberParamType = click.ParamType


class BoundedNumber(NumberParamType):
    """An int or a float within a :class:`~harness.profile.Bound`, and finite."""

    def __init__(self, kind: type[int] | type[float], bound: Bound) -> None:
        self.kind, self.bound = kind, bound
        self.name = "integer" if kind is int else "float"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int | float:
        number = value if isinstance(value, self.kind) and not isinstance(value, bool) else self._parse(value, param, ctx)
        problem = self.bound.problem(number)
        if problem:
            self.fail(problem, param, ctx)
        return number

    def _parse(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int | float:
        try:
            return self.kind(str(value))
        except ValueError:
            self.fail(f"{value!r} is not {NUMBER_NAMES[self.kind]}", param, ctx)

    def __repr__(self) -> str:
        return f"{self.name.upper()} {self.bound.describe()}"


def integer(low: int | None = None, high: int | None = None) -> BoundedNumber:
    """An integer option between ``low`` and ``high``, both inclusive."""
    return BoundedNumber(int, Bound(low=low, high=high))


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False, high_open: bool = False) -> BoundedNumber:
    """A finite float option within the bounds (inclusive unless open)."""
    return BoundedNumber(float, Bound(low=low, high=high, low_open=low_open, high_open=high_open))


def positive() -> BoundedNumber:
    """A finite float above 0 (a rate, a duration, a budget)."""
    return number(0.0, low_open=True)


def profile_key(key: str) -> BoundedNumber:
    """The type of a flag that overrides the profile key ``key`` (``workload.rate``): the key's own range."""
    kind, bound = key_bound(key)
    return BoundedNumber(kind, bound)
