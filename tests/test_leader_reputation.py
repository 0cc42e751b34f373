"""The reputation-aware leader schedule (popbench/pop/leaders.py): computed from committed headers alone."""

from __future__ import annotations

from popbench.genesis import ChainParams, make_genesis
from popbench.model.block import Block
from popbench.pop.leaders import WINDOW, LeaderSchedule

GENESIS, _ = make_genesis(4, seed="leaders", params=ChainParams(min_work_bits=0))


def header(height: int, view: int, proposer: int) -> Block:
    return Block(height, view, bytes(32), proposer, 0, bytes(32), bytes(32), [], [])


def run_chain(schedule: LeaderSchedule, down: set[int], heights: int, view: int = 0) -> list[Block]:
    """Commit ``heights`` blocks as the network would with ``down`` never proposing: each view whose
    leader is down fails, and the block carries the first view with a live leader."""
    blocks = []
    for _ in range(heights):
        height = schedule.head_height + 1
        while schedule.leader(view, height) in down:
            view += 1
        block = header(height, view, schedule.leader(view, height))
        schedule.advance(block)
        blocks.append(block)
    return blocks


def test_with_no_missed_turn_it_is_the_plain_rotation() -> None:
    schedule = LeaderSchedule(GENESIS)
    run_chain(schedule, set(), 10)
    assert [schedule.leader(view, 11) for view in range(4)] == [GENESIS.leader_for_view(view + 11) for view in range(4)]


def test_a_validator_that_missed_its_turn_is_left_out_then_retried_on_probation_after_16n_heights() -> None:
    schedule = LeaderSchedule(GENESIS)
    blocks = run_chain(schedule, {2}, 3 * len(GENESIS.leader_schedule))
    first_miss = next(b.height for b in blocks if b.view > 0)
    assert schedule.excluded() == {2}
    assert all(schedule.leader(view, schedule.head_height + 1) != 2 for view in range(8))
    run_chain(schedule, {2}, first_miss + schedule.exclusion(1) - schedule.head_height)
    assert schedule.excluded() == frozenset() and schedule.on_probation(2)  # its exclusion ran out: tried again


def test_each_further_miss_doubles_the_exclusion_up_to_the_window() -> None:
    schedule = LeaderSchedule(GENESIS)
    assert [schedule.exclusion(m) for m in (1, 2, 3)] == [64, 128, 256]
    assert schedule.exclusion(30) == WINDOW


def test_leading_a_committed_block_shows_it_is_back() -> None:
    schedule = LeaderSchedule(GENESIS)
    run_chain(schedule, {2}, 200)  # missed turns, excluded, retried and missed again
    assert 2 in schedule.misses
    run_chain(schedule, set(), 2 * WINDOW)  # back up: once retried it leads, and its misses are forgotten
    assert 2 not in schedule.misses and not schedule.on_probation(2)


def test_never_more_than_f_are_left_out() -> None:
    schedule = LeaderSchedule(GENESIS)
    run_chain(schedule, {1, 2}, 40)  # two of four down: more than f = 1, so one stays in the rotation
    assert len(schedule.excluded()) == GENESIS.f


def test_a_restart_rebuilds_the_same_schedule_from_the_stored_headers() -> None:
    live = LeaderSchedule(GENESIS)
    blocks = run_chain(live, {3}, 300)
    restarted = LeaderSchedule(GENESIS)
    restarted.restore(blocks)
    assert restarted.excluded() == live.excluded() and restarted.misses == live.misses
    assert [restarted.leader(v, 301) for v in range(6)] == [live.leader(v, 301) for v in range(6)]


def test_plain_rotation_is_kept_selectable() -> None:
    schedule = LeaderSchedule(GENESIS, reputation=False)
    run_chain(schedule, {2}, 50)
    assert schedule.excluded() == frozenset() and schedule.leader(0, 51) == GENESIS.leader_for_view(51)
