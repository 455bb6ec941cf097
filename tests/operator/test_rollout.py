"""The roll gate's decisions: one resource at a time, in (namespace, name) order."""

from __future__ import annotations

from blacklist_operator.runtime.rollout import Phase, RollState, decide, finished_rolls, phase
from blacklist_operator.runtime.state import HeldImages, RolloutGate

OUTDATED = RollState(outdated=True, rolling_out=False, ready=True)
# Applied, its new pods on their way.
ROLLING = RollState(outdated=False, rolling_out=True, ready=False)
CURRENT = RollState(outdated=False, rolling_out=False, ready=True)
# On the default image, every pod of it, but not all available (say a crash loop).
UNAVAILABLE = RollState(outdated=False, rolling_out=False, ready=False)

A, B, C = ("team-a", "svc"), ("team-b", "alpha"), ("team-b", "beta")


def test_phases() -> None:
    assert phase(OUTDATED, started=False) is Phase.OUTDATED
    assert phase(CURRENT, started=False) is Phase.CURRENT
    assert phase(ROLLING, started=False) is Phase.ROLLING
    # Not let roll here: a resource merely unavailable holds nobody back.
    assert phase(UNAVAILABLE, started=False) is Phase.CURRENT
    # Let roll: it rolls until every pod runs the default image and is available, even
    # while the watch still shows the old image.
    assert phase(OUTDATED, started=True) is Phase.ROLLING
    assert phase(ROLLING, started=True) is Phase.ROLLING
    assert phase(UNAVAILABLE, started=True) is Phase.ROLLING
    assert phase(CURRENT, started=True) is Phase.CURRENT


def test_the_first_in_namespace_name_order_rolls_first() -> None:
    states = {A: OUTDATED, B: OUTDATED, C: OUTDATED}
    assert decide(A, states, set()).may_roll
    later = decide(C, states, set())
    assert not later.may_roll
    assert (later.blocker, later.blocker_phase) == (A, Phase.OUTDATED)
    # Held back by a resource still to roll, not by a roll under way: not next in line.
    assert not later.next_in_line


def test_nobody_rolls_beside_a_roll_under_way() -> None:
    states = {A: OUTDATED, B: OUTDATED, C: OUTDATED}
    waiting = decide(B, states, {A})
    assert (waiting.may_roll, waiting.blocker, waiting.blocker_phase) == (False, A, Phase.ROLLING)
    assert waiting.next_in_line
    # Even a resource before the rolling one waits for it to finish.
    assert not decide(A, {A: OUTDATED, C: ROLLING}, {C}).may_roll
    # The one that rolls may go on applying its new images.
    assert decide(A, states, {A}).may_roll


def test_a_finished_roll_lets_the_next_one_go() -> None:
    states = {A: CURRENT, B: OUTDATED, C: OUTDATED}
    decision = decide(B, states, {A})
    assert decision.may_roll
    assert decision.finished == frozenset({A})
    assert not decide(C, states, {A}).may_roll


def test_a_roll_that_never_becomes_ready_holds_the_others_back() -> None:
    decision = decide(B, {A: UNAVAILABLE, B: OUTDATED}, {A})
    assert (decision.may_roll, decision.blocker) == (False, A)


def test_after_a_restart_a_rollout_under_way_counts_as_a_roll() -> None:
    # Nothing was started by this process, but A's pods are being replaced.
    decision = decide(B, {A: ROLLING, B: OUTDATED}, set())
    assert (decision.may_roll, decision.blocker, decision.blocker_phase) == (
        False,
        A,
        Phase.ROLLING,
    )


def test_a_started_resource_that_is_gone_is_forgotten() -> None:
    assert finished_rolls({B: OUTDATED}, {A}) == frozenset({A})
    assert decide(B, {B: OUTDATED}, {A}).may_roll


def test_the_gate_lets_one_resource_roll_and_remembers_who_waits() -> None:
    gate = RolloutGate()
    states = {A: OUTDATED, B: OUTDATED, C: OUTDATED}
    first, changed = gate.decide(A, states)
    assert first.may_roll
    assert changed
    # Asked again while it rolls: still allowed, nothing new to tell.
    assert gate.decide(A, states) == (first, False)
    rolling = {**states, A: ROLLING}
    refused, changed = gate.decide(B, rolling)
    assert not refused.may_roll
    assert changed
    gate.hold(B, HeldImages("svc:1", None))
    assert gate.decide(B, rolling)[1] is False
    assert gate.held(B) == HeldImages("svc:1", None)
    assert gate.next_waiting() == B
    turn, changed = gate.decide(B, {A: CURRENT, B: OUTDATED, C: OUTDATED})
    assert turn.may_roll
    assert changed
    assert gate.held(B) is None
    assert gate.next_waiting() is None
    assert not gate.decide(C, {A: CURRENT, B: ROLLING, C: OUTDATED})[0].may_roll
    gate.forget(B)
    assert gate.decide(C, {A: CURRENT, C: OUTDATED})[0].may_roll
