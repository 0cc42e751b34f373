"""`--duration` shorter than the profile's window: warm-up and cool-down shrink so the steady part keeps
at least half of it (harness/profile.py ``fit_to_duration``, docs/profiles.md)."""

from __future__ import annotations

import pytest

from harness.profile import STEADY_SHARE_MIN, Run, apply_overrides, fit_to_duration, load_profile, profile_from_dict, scaling_note
from popbench.errors import ConfigError


def steady_s(run: Run) -> float:
    return run.duration_s - run.warmup_s - run.cooldown_s


def test_the_default_profile_runs_for_15_s_with_scaled_warm_up_and_cool_down() -> None:
    loaded = load_profile("testnet-100")
    assert loaded.run.warmup_s + loaded.run.cooldown_s >= 15  # unscaled, 15 s would leave no steady window
    run = apply_overrides(loaded, nodes=4, duration_s=15).run
    assert (run.duration_s, run.warmup_s, run.cooldown_s) == (15, 2.5, 1.25)  # the profile's 10/60 and 5/60 of 15 s
    assert steady_s(run) >= STEADY_SHARE_MIN * run.duration_s
    note = scaling_note(loaded.run, run)
    assert note is not None and note.startswith("warm-up scaled to 2.5 s and cool-down to 1.25 s for a 15 s run")


def test_phases_that_already_leave_half_the_window_steady_are_kept() -> None:
    loaded = load_profile("testnet-100")
    run = apply_overrides(loaded, duration_s=40).run  # 10 + 5 of 40 s: 25 s steady
    assert (run.warmup_s, run.cooldown_s) == (loaded.run.warmup_s, loaded.run.cooldown_s)
    assert scaling_note(loaded.run, run) is None


def test_a_profile_whose_own_phases_take_most_of_its_window_is_cut_to_half() -> None:
    # the profile: 6 s + 3 s of a 10 s window; --duration 4 scales them to 2.4 s + 1.2 s, still over half of 4 s
    run = fit_to_duration(Run(duration_s=4.0, warmup_s=6.0, cooldown_s=3.0), profile_duration_s=10.0)
    assert run.warmup_s + run.cooldown_s == pytest.approx(2.0, abs=0.02)  # half of 4 s, in the ratio 2 : 1
    assert run.warmup_s == pytest.approx(2 * run.cooldown_s, abs=0.02)


def test_without_duration_on_the_command_line_the_file_is_still_checked() -> None:
    with pytest.raises(ConfigError) as caught:
        profile_from_dict({"run": {"duration_s": 10, "warmup_s": 6, "cooldown_s": 5}}, "test.toml")
    assert "run.warmup_s" in str(caught.value)
    profile = profile_from_dict({"run": {"duration_s": 60, "warmup_s": 6, "cooldown_s": 5}}, "test.toml")
    assert apply_overrides(profile, nodes=8).run == profile.run
