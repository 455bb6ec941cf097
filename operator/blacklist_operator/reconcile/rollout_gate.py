"""The roll gate: a resource moves onto the operator's new default images only in its turn.

A BlacklistService without ``spec.image`` (or ``spec.database.image``) runs the
operator's default. When a new operator brings a new default, the reconcile asks
:func:`gate_default_images` before it applies the Deployments: the resource rolls
when :func:`blacklist_operator.runtime.rollout.decide` says it is its turn; until then it
keeps the image its live Deployment runs (``status.image`` still shows it), with a
``WaitingForRollout`` Event, and is reconciled again when the roll before it ends.
A pinned image, a user's edit of ``spec.image`` and a Deployment still to be
created never wait.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from blacklist_operator.builders.naming import database_name_of, service_name_of
from blacklist_operator.kube.api import ApiError
from blacklist_operator.model.resource import (
    BlacklistService,
    SpecError,
    check_host_path,
    parse,
    with_images,
)
from blacklist_operator.reconcile.readiness import watched_progress
from blacklist_operator.runtime.rollout import Decision, Phase, RollState
from blacklist_operator.runtime.state import DeploymentProgress, HeldImages, Runtime
from blacklist_operator.runtime.workqueue import InstanceKey

# Event reasons: a resource waits for its turn, or starts rolling.
WAITING_FOR_ROLLOUT = "WaitingForRollout"
ROLLING_OUT = "RollingOut"


@dataclass(frozen=True)
class GateResult:
    """What the gate said of one resource."""

    # The resource to apply: with the images it keeps while it waits.
    resource: BlacklistService
    # Why it waits for its turn; None when it rolls, or has nothing to roll.
    waiting: str | None = None
    # It waits for a roll under way only: check again soon (the others are woken in turn).
    retry: bool = False
    # A Normal Event (reason, message) when the resource started waiting or rolling.
    notice: tuple[str, str] | None = None


def follows_defaults(body: Mapping[str, Any]) -> tuple[bool, bool]:
    """Whether the resource runs the operator's default service image, and database image."""
    spec = body.get("spec") or {}
    database = spec.get("database") or {}
    return (
        spec.get("image") is None,
        database.get("image") is None and database.get("external") is None,
    )


def _outdated(progress: DeploymentProgress | None, default: str) -> str | None:
    """The image a live Deployment runs when it is not ``default`` (None: absent or current)."""
    if progress is None or progress.image is None or progress.image == default:
        return None
    return progress.image


def _deployments(
    runtime: Runtime, key: InstanceKey, body: Mapping[str, Any]
) -> tuple[DeploymentProgress | None, DeploymentProgress | None]:
    """The live progress of the Deployments that follow a default (None: pinned or external)."""
    namespace, instance = key
    follows_service, follows_database = follows_defaults(body)
    return (
        watched_progress(runtime, namespace, service_name_of(instance))
        if follows_service
        else None,
        watched_progress(runtime, namespace, database_name_of(instance))
        if follows_database
        else None,
    )


def roll_state(runtime: Runtime, key: InstanceKey, body: Mapping[str, Any]) -> RollState | None:
    """The :class:`RollState` of a resource, or None when it follows no default image."""
    service, database = _deployments(runtime, key, body)
    images = runtime.config.images
    followed = [
        (progress, default)
        for progress, default in ((service, images.service), (database, images.database))
        if progress is not None
    ]
    if not followed:
        return None
    return RollState(
        outdated=any(_outdated(progress, default) is not None for progress, default in followed),
        rolling_out=any(progress.rolling_out for progress, _ in followed),
        # A Deployment still missing runs nothing to wait for.
        ready=all(progress.available or progress.image is None for progress, _ in followed),
    )


def _appliable(runtime: Runtime, body: Mapping[str, Any]) -> bool:
    """Whether the reconcile can act on this spec (it refuses one with InvalidSpec)."""
    try:
        check_host_path(
            parse(body, runtime.config.images), runtime.config.allowed_host_path_prefixes
        )
    except SpecError:
        return False
    return True


def roll_states(runtime: Runtime) -> dict[InstanceKey, RollState]:
    """The :class:`RollState` of every resource that follows a default image and can be applied.

    One whose spec the reconcile refuses is left out: it cannot roll, so it must not
    hold the others back.
    """
    states = {}
    for key in runtime.instances:
        body = runtime.instances.get(key)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            continue
        if follows_defaults(body) == (False, False):
            continue
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        if not runtime.rollout.appliable(key, generation, partial(_appliable, runtime, body)):
            continue
        state = roll_state(runtime, key, body)
        if state is not None:
            states[key] = state
    return states


def waiting_message(held: HeldImages, decision: Decision) -> str:
    """Why a resource keeps its images: which one rolls before it."""
    kept = []
    if held.service is not None:
        kept.append(f"the service keeps {held.service}")
    if held.database is not None:
        kept.append(f"the database keeps {held.database}")
    blocker = "/".join(decision.blocker or ())
    why = (
        f"{blocker} is rolling"
        if decision.blocker_phase is Phase.ROLLING
        else f"{blocker} rolls before it"
    )
    return (
        f"Waiting for its turn to roll onto the operator's default images ({why}; one "
        f"resource at a time, in namespace/name order): {', '.join(kept)}"
    )


def gate_default_images(
    runtime: Runtime, body: Mapping[str, Any], resource: BlacklistService
) -> GateResult:
    """``resource`` as the reconcile must apply it now: rolled in its turn, or keeping its images.

    ``resource`` is the parsed resource with the operator's defaults filled in. A live
    Deployment that runs another image than its default moves to the default only
    when the gate lets the resource roll; until then it keeps its image. When another
    resource's Deployment cannot be read the resource waits too, and is tried again;
    :class:`ApiError` reading its own is raised.
    """
    key = (resource.namespace, resource.name)
    images = runtime.config.images
    # Its own Deployments are known from their watch; an error reading one is the reconcile's.
    service, database = _deployments(runtime, key, body)
    held = HeldImages(_outdated(service, images.service), _outdated(database, images.database))
    if held == HeldImages(None, None):
        runtime.rollout.current(key)
        return GateResult(resource)
    try:
        states = roll_states(runtime)
    except ApiError as error:
        # Another resource's Deployment could not be read: it might be rolling.
        runtime.rollout.hold(key, held)
        message = f"Waiting to roll onto the operator's default images: {error}"
        return GateResult(with_images(resource, *held), message, retry=True)
    state = roll_state(runtime, key, body)
    if state is not None:
        states[key] = state
    decision, changed = runtime.rollout.decide(key, states)
    if decision.may_roll:
        moves = []
        if held.service is not None:
            moves.append(f"the service from {held.service} to {images.service}")
        if held.database is not None:
            moves.append(f"the database from {held.database} to {images.database}")
        message = f"Rolling onto the operator's default images: {', '.join(moves)}"
        return GateResult(resource, notice=(ROLLING_OUT, message) if changed else None)
    runtime.rollout.hold(key, held)
    message = waiting_message(held, decision)
    return GateResult(
        with_images(resource, *held),
        message,
        retry=decision.next_in_line,
        notice=(WAITING_FOR_ROLLOUT, message) if changed else None,
    )
