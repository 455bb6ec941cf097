"""The leader election's decisions (take over, renew, wait, step down) given a Lease and a clock."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import pytest

from blacklist_operator.__main__ import parse_arguments
from blacklist_operator.controller.leadership import settings
from blacklist_operator.controller.lease import (
    Action,
    ElectionTiming,
    LeaseRecord,
    Observation,
    acquired,
    decide,
    fence_deadline,
    lease_manifest,
    observe,
    parse_lease,
    released,
    renewed,
)

TIMING = ElectionTiming(lease_duration=8, renew_deadline=5.0, retry_period=1.0)
MOMENT = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def held_by(holder: str, renew_time: str = "t0", duration: int = 8) -> LeaseRecord:
    return LeaseRecord(holder=holder, duration_seconds=duration, renew_time=renew_time)


def seen(record: LeaseRecord | None, at: float) -> Observation:
    return Observation(record=record, observed_at=at)


def test_no_lease_is_created() -> None:
    assert decide(seen(None, 0.0), "me", False, 0.0, TIMING).action is Action.CREATE


def test_a_live_lease_of_another_is_waited_for_until_it_expires() -> None:
    observation = seen(held_by("other"), at=100.0)
    early = decide(observation, "me", False, 101.0, TIMING)
    assert early.action is Action.WAIT
    assert early.wait_seconds == TIMING.retry_period
    # Half a second before expiry: look again exactly then, not a whole period later.
    late = decide(observation, "me", False, 107.5, TIMING)
    assert late.action is Action.WAIT
    assert late.wait_seconds == pytest.approx(0.5)
    assert decide(observation, "me", False, 108.0, TIMING).action is Action.ACQUIRE


def test_expiry_counts_from_when_the_record_was_seen_not_from_its_renew_time() -> None:
    # The holder's clock may be hours off: its renewTime is never compared with ours.
    record = LeaseRecord("other", 8, renew_time="1999-01-01T00:00:00.000000Z")
    assert decide(seen(record, 500.0), "me", False, 501.0, TIMING).action is Action.WAIT


def test_the_lease_duration_of_the_record_wins_over_our_own() -> None:
    observation = seen(held_by("other", duration=30), at=0.0)
    assert decide(observation, "me", False, 29.0, TIMING).action is Action.WAIT
    assert decide(observation, "me", False, 30.0, TIMING).action is Action.ACQUIRE


def test_a_renewal_restarts_the_clock_and_an_unchanged_record_does_not() -> None:
    first = observe(None, held_by("other", "t0"), now=10.0)
    same = observe(first, held_by("other", "t0"), now=15.0)
    assert same.observed_at == 10.0
    assert decide(same, "me", False, 18.0, TIMING).action is Action.ACQUIRE
    renewed_record = observe(same, held_by("other", "t1"), now=17.0)
    assert renewed_record.observed_at == 17.0
    assert decide(renewed_record, "me", False, 18.0, TIMING).action is Action.WAIT


def test_a_resource_version_alone_is_no_renewal() -> None:
    first = observe(None, LeaseRecord("other", 8, renew_time="t0", resource_version="1"), 0.0)
    edited = observe(first, LeaseRecord("other", 8, renew_time="t0", resource_version="2"), 5.0)
    assert edited.observed_at == 0.0


def test_a_released_lease_is_taken_at_once() -> None:
    assert decide(seen(held_by(""), 0.0), "me", False, 0.0, TIMING).action is Action.ACQUIRE


def test_the_leader_renews_its_own_lease() -> None:
    decision = decide(seen(held_by("me"), 0.0), "me", True, 100.0, TIMING)
    assert decision.action is Action.RENEW
    assert decision.wait_seconds == TIMING.retry_period


def test_a_restarted_process_of_the_holder_takes_its_lease_back_without_waiting() -> None:
    assert decide(seen(held_by("me"), 0.0), "me", False, 0.1, TIMING).action is Action.ACQUIRE


def test_a_leader_that_finds_another_holder_steps_down() -> None:
    assert decide(seen(held_by("other"), 0.0), "me", True, 0.0, TIMING).action is Action.STEP_DOWN
    # Even released: a leader never writes from a lease it does not hold.
    assert decide(seen(held_by(""), 0.0), "me", True, 0.0, TIMING).action is Action.STEP_DOWN


def test_the_fence_closes_at_the_renew_deadline_before_any_standby_may_take_over() -> None:
    renew_started = 50.0
    deadline = fence_deadline(renew_started, TIMING)
    assert deadline == 55.0
    # A standby sees that renewal no earlier than it was sent, so takes over no earlier than:
    assert deadline < renew_started + TIMING.lease_duration


def test_lease_bodies_round_trip() -> None:
    created = lease_manifest("ops", "blacklist-operator", "pod-a", TIMING, MOMENT)
    assert created["apiVersion"] == "coordination.k8s.io/v1"
    assert created["spec"]["renewTime"] == "2026-01-02T03:04:05.678901Z"
    created["metadata"]["resourceVersion"] = "7"
    record = parse_lease(created)
    assert (record.holder, record.duration_seconds, record.transitions) == ("pod-a", 8, 0)
    assert record.resource_version == "7"

    taken = acquired(created, "pod-b", TIMING, MOMENT)
    assert taken["metadata"]["resourceVersion"] == "7"  # a guarded write
    assert (parse_lease(taken).holder, parse_lease(taken).transitions) == ("pod-b", 1)
    assert parse_lease(acquired(taken, "pod-b", TIMING, MOMENT)).transitions == 1

    later = datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC)
    assert parse_lease(renewed(taken, later)).renew_time == "2026-01-02T03:04:06.000000Z"
    assert parse_lease(renewed(taken, later)).holder == "pod-b"
    gone = parse_lease(released(taken, later))
    assert (gone.holder, gone.duration_seconds) == ("", 1)


@pytest.mark.parametrize(
    ("timing", "problem"),
    [
        (ElectionTiming(8, 8.0, 1.0), "shorter than the lease duration"),
        (ElectionTiming(8, 5.0, 3.0), "at most half the renew deadline"),
        (ElectionTiming(0, 5.0, 1.0), "at least 1 s"),
        (ElectionTiming(8, 5.0, 0.0), "positive"),
    ],
)
def test_timings_that_cannot_work_are_refused(timing: ElectionTiming, problem: str) -> None:
    assert any(problem in found for found in timing.problems())


def test_the_default_timing_holds_together() -> None:
    assert ElectionTiming().problems() == []


def election_of(*flags: str) -> argparse.Namespace:
    return parse_arguments(list(flags))


def test_leader_election_is_off_unless_asked() -> None:
    assert not settings(election_of()).enabled


def test_leader_election_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "operator-7d9-abcde")
    election = settings(
        election_of(
            "--leader-election",
            "--operator-namespace",
            "ops",
            "--leader-election-retry-period",
            "0.5",
        )
    )
    assert (election.namespace, election.lease_name) == ("ops", "blacklist-operator")
    assert election.identity == "operator-7d9-abcde"
    assert election.timing == ElectionTiming(8, 5.0, 0.5)
    other = settings(
        election_of(
            "--leader-election",
            "--leader-election-namespace=leases",
            "--leader-election-lease-name=mine",
            "--leader-election-identity=me",
        )
    )
    assert (other.namespace, other.lease_name, other.identity) == ("leases", "mine", "me")


def test_leader_election_outside_a_cluster_needs_a_namespace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    with pytest.raises(SystemExit, match="leader-election-namespace"):
        settings(election_of("--leader-election"))
    with pytest.raises(SystemExit, match="renew deadline"):
        settings(
            election_of(
                "--leader-election",
                "-n",
                "x",
                "--operator-namespace=ops",
                "--leader-election-renew-deadline=9",
            )
        )
