"""The leader election's decisions, as pure functions of a Lease record, an identity and a clock.

The elector (``leadership``) reads the ``coordination.k8s.io/v1`` Lease, asks
:func:`decide` what to do, and writes what :func:`acquired` or :func:`renewed`
return. Nothing here does I/O, so every decision is unit-tested with made-up
records and clock readings.

Expiry is judged as client-go judges it: never from the ``renewTime`` written by
another machine (its clock may be off), but from when *this* process first saw
the record in its current form (:class:`Observation`, on the local monotonic
clock). A holder that stops renewing leaves the record unchanged; once it has
looked the same for ``leaseDurationSeconds``, it is taken over.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from blacklist_operator.builders.naming import MANAGED_BY_LABEL, OPERATOR_APP_NAME

LEASE_API_VERSION = "coordination.k8s.io/v1"


@dataclass(frozen=True)
class ElectionTiming:
    """How long a lease lasts, how long a leader keeps trying to renew it, how often it tries.

    ``lease_duration`` is how long a standby waits after the holder's last renewal
    (as the standby saw it) before it takes over: the takeover time after a leader
    dies. ``renew_deadline`` is how long a leader may go without a successful
    renewal before it fences itself; the gap between the two is the margin for
    clocks that run at slightly different rates and for a write already sent.
    """

    lease_duration: int = 8
    renew_deadline: float = 5.0
    retry_period: float = 1.0

    def problems(self) -> list[str]:
        """What is wrong with these numbers (the flags that set them), or nothing."""
        found = []
        if self.lease_duration < 1:
            found.append("the lease duration must be at least 1 s")
        if not self.renew_deadline < self.lease_duration:
            found.append("the renew deadline must be shorter than the lease duration")
        # A leader must get more than one try at renewing before its deadline.
        if not self.retry_period * 2 <= self.renew_deadline:
            found.append("the retry period must be at most half the renew deadline")
        if self.retry_period <= 0:
            found.append("the retry period must be positive")
        return found


@dataclass(frozen=True)
class LeaseRecord:
    """The fields of a Lease that the election reads (``spec`` and the resource version)."""

    holder: str
    duration_seconds: int
    transitions: int = 0
    acquire_time: str | None = None
    renew_time: str | None = None
    resource_version: str | None = None


@dataclass(frozen=True)
class Observation:
    """A Lease record and when (local monotonic seconds) it was first seen in this form."""

    record: LeaseRecord | None
    observed_at: float


class Action(enum.Enum):
    """What the elector does next."""

    CREATE = "create"  # no Lease yet: create it, held by us
    ACQUIRE = "acquire"  # free, expired, or ours from a previous run of this identity
    RENEW = "renew"  # we lead and the Lease is still ours
    WAIT = "wait"  # someone else holds a live Lease
    STEP_DOWN = "step down"  # we led, and the Lease is now someone else's


@dataclass(frozen=True)
class Decision:
    """An action, and how long to sleep before looking again."""

    action: Action
    wait_seconds: float


def parse_lease(body: dict[str, Any]) -> LeaseRecord:
    """The election's fields of a Lease object as the API returns it."""
    spec = body.get("spec") or {}
    return LeaseRecord(
        holder=str(spec.get("holderIdentity") or ""),
        duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
        transitions=int(spec.get("leaseTransitions") or 0),
        acquire_time=spec.get("acquireTime"),
        renew_time=spec.get("renewTime"),
        resource_version=(body.get("metadata") or {}).get("resourceVersion"),
    )


def observe(previous: Observation | None, record: LeaseRecord | None, now: float) -> Observation:
    """The observation after reading ``record`` at ``now``: its clock restarts when it changed.

    A record is the same when its holder and renew time are: only a renewal (or a
    takeover) moves the expiry. The resource version alone also changes when
    someone edits a label, which proves nothing about the holder being alive.
    """
    if previous is not None and _same(previous.record, record):
        return Observation(record=record, observed_at=previous.observed_at)
    return Observation(record=record, observed_at=now)


def _same(first: LeaseRecord | None, second: LeaseRecord | None) -> bool:
    if first is None or second is None:
        return first is second
    return (first.holder, first.renew_time, first.duration_seconds) == (
        second.holder,
        second.renew_time,
        second.duration_seconds,
    )


def decide(
    observation: Observation, identity: str, leading: bool, now: float, timing: ElectionTiming
) -> Decision:
    """What to do with the Lease as last observed, at local monotonic time ``now``."""
    record = observation.record
    if record is None:
        return Decision(Action.CREATE, 0.0)
    if record.holder == identity:
        # Leading: renew. Not leading (a restarted process of the same pod: the kubelet
        # starts a container again only once the old one is gone): take it back at once.
        return Decision(Action.RENEW if leading else Action.ACQUIRE, timing.retry_period)
    if leading:
        return Decision(Action.STEP_DOWN, 0.0)
    if not record.holder:
        return Decision(Action.ACQUIRE, 0.0)  # released by a leader that stopped cleanly
    expires_in = observation.observed_at + max(record.duration_seconds, 1) - now
    if expires_in <= 0:
        return Decision(Action.ACQUIRE, 0.0)
    # Look again after a retry period, or exactly when it would expire if that is sooner,
    # so a dead leader is replaced after the lease duration and not up to a period later.
    return Decision(Action.WAIT, min(timing.retry_period, expires_in))


def fence_deadline(renew_started: float, timing: ElectionTiming) -> float:
    """Until when (local monotonic) a leader may write after a renewal that started then.

    The standby's expiry counts from when it saw the renewal, which is after the
    request left; counting from before it left keeps the leader's deadline earlier.
    """
    return renew_started + timing.renew_deadline


def micro_time(moment: datetime) -> str:
    """A Lease's ``MicroTime``: RFC 3339 in UTC with microseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_manifest(
    namespace: str, name: str, identity: str, timing: ElectionTiming, moment: datetime
) -> dict[str, Any]:
    """A new Lease, held by ``identity`` from ``moment``."""
    return {
        "apiVersion": LEASE_API_VERSION,
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: OPERATOR_APP_NAME},
        },
        "spec": _spec(LeaseRecord(identity, timing.lease_duration), moment),
    }


def acquired(
    body: dict[str, Any], identity: str, timing: ElectionTiming, moment: datetime
) -> dict[str, Any]:
    """The Lease ``body`` taken over by ``identity``; its resource version guards the write."""
    record = parse_lease(body)
    taken = replace(
        record,
        holder=identity,
        duration_seconds=timing.lease_duration,
        transitions=record.transitions + (0 if record.holder == identity else 1),
    )
    return {**body, "spec": _spec(taken, moment)}


def renewed(body: dict[str, Any], moment: datetime) -> dict[str, Any]:
    """The Lease ``body`` with its renew time moved to ``moment``."""
    return {**body, "spec": {**(body.get("spec") or {}), "renewTime": micro_time(moment)}}


def released(body: dict[str, Any], moment: datetime) -> dict[str, Any]:
    """The Lease ``body`` given up: no holder, so a standby takes it at its next look."""
    spec = {**(body.get("spec") or {}), "holderIdentity": "", "renewTime": micro_time(moment)}
    spec["leaseDurationSeconds"] = 1
    return {**body, "spec": spec}


def _spec(record: LeaseRecord, moment: datetime) -> dict[str, Any]:
    """The spec of a Lease that ``record.holder`` acquires at ``moment``."""
    now = micro_time(moment)
    return {
        "holderIdentity": record.holder,
        "leaseDurationSeconds": record.duration_seconds,
        "leaseTransitions": record.transitions,
        "acquireTime": now,
        "renewTime": now,
    }
