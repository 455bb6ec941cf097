"""Which resource may roll onto the operator's new default images next: pure decisions.

When the operator's default service or database image changes (a new release of
the operator), every BlacklistService that names no image of its own must move to
it, but not all at once: one resource at a time, cluster-wide within this
operator, in the order of ``(namespace, name)`` so that users can predict it. A
resource whose roll never finishes (its new pods never become ready) holds the
others back, as a bad image must not spread.

This module decides from plain facts, with no I/O: what each resource's live
Deployments say (:class:`RollState`) and which resources this operator let roll
(``started``). :mod:`blacklist_operator.reconcile.rollout_gate` gathers the facts.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Set
from dataclasses import dataclass

# (namespace, name) of a BlacklistService: the order of the roll.
ResourceKey = tuple[str, str]


class Phase(enum.Enum):
    """Where a resource that follows the operator's defaults stands."""

    # Its Deployments run the default images, with no rollout under way.
    CURRENT = "current"
    # A Deployment runs another image than the default: it has to roll.
    OUTDATED = "outdated"
    # It is rolling: the gate let it (until its rollouts completed), or a rollout is under way.
    ROLLING = "rolling"


@dataclass(frozen=True)
class RollState:
    """What the live Deployments of one resource that follows a default image say.

    Only the Deployments whose image is the operator's default count (a pinned
    ``spec.image`` leaves the service Deployment out, a pinned or external database
    the database one).
    """

    # One of them runs another image than the default.
    outdated: bool
    # One of them has a rollout under way: a template not yet observed, or pods of an
    # older template still running.
    rolling_out: bool
    # Every one of them has all its replicas updated and available.
    ready: bool


def phase(state: RollState, started: bool) -> Phase:
    """The phase of a resource; ``started``: the gate let it roll and has not seen it finish.

    A started roll is finished when every Deployment runs the default image, with
    its rollout complete and every replica available. One that was not started here
    (the operator restarted in the middle of it) counts as rolling while its rollout
    is under way, so a restart never lets a second resource roll beside it.
    """
    if started:
        finished = not state.outdated and not state.rolling_out and state.ready
        return Phase.CURRENT if finished else Phase.ROLLING
    if state.outdated:
        return Phase.OUTDATED
    return Phase.ROLLING if state.rolling_out else Phase.CURRENT


@dataclass(frozen=True)
class Decision:
    """Whether a resource may roll now; if not, which resource goes before it, and why."""

    may_roll: bool
    # The resource that must finish (ROLLING) or roll (OUTDATED) first; None when it may roll.
    blocker: ResourceKey | None = None
    blocker_phase: Phase | None = None
    # Started resources whose roll is over (or that are gone): the gate forgets them.
    finished: frozenset[ResourceKey] = frozenset()

    @property
    def next_in_line(self) -> bool:
        """Whether only a roll under way holds it back (it goes as soon as that one finished)."""
        return self.may_roll or self.blocker_phase is Phase.ROLLING


def finished_rolls(
    states: Mapping[ResourceKey, RollState], started: Set[ResourceKey]
) -> frozenset[ResourceKey]:
    """The started resources whose roll is over, or that no longer follow a default."""
    return frozenset(
        key
        for key in started
        if key not in states or phase(states[key], started=True) is Phase.CURRENT
    )


def decide(
    key: ResourceKey,
    states: Mapping[ResourceKey, RollState],
    started: Set[ResourceKey],
) -> Decision:
    """Whether ``key``, which runs another image than its default, may roll onto it now.

    ``states`` holds every resource that follows a default image (``key`` included);
    ``started`` the ones the gate let roll. ``key`` may roll when it already started,
    or when no other resource is rolling and none before it in ``(namespace, name)``
    order is waiting for its turn.
    """
    finished = finished_rolls(states, started)
    rolling_keys = started - finished
    if key in rolling_keys:
        return Decision(True, finished=finished)
    phases = {other: phase(state, other in rolling_keys) for other, state in states.items()}
    rolling = sorted(
        other for other, now in phases.items() if other != key and now is Phase.ROLLING
    )
    if rolling:
        return Decision(False, rolling[0], Phase.ROLLING, finished)
    before = sorted(other for other, now in phases.items() if other < key and now is Phase.OUTDATED)
    if before:
        return Decision(False, before[0], Phase.OUTDATED, finished)
    return Decision(True, finished=finished)
