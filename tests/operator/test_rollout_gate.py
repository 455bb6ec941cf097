"""The roll gate in the reconcile's hands: what each resource applies, from the watched Deployments.

No cluster: the Deployments' progress is what their watch would have reported.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from blacklist_operator.kube.api import KubernetesApi
from blacklist_operator.model.resource import ImageDefaults, parse
from blacklist_operator.reconcile.rollout_gate import (
    ROLLING_OUT,
    WAITING_FOR_ROLLOUT,
    gate_default_images,
)
from blacklist_operator.runtime.config import AddressMap, OperatorConfig
from blacklist_operator.runtime.state import DeploymentProgress, HeldImages, Runtime

OLD = ImageDefaults(service="registry/svc:1", database="registry/pg:15")
NEW = ImageDefaults(service="registry/svc:2", database="registry/pg:16")
PINNED = "registry/svc:pinned"


def body(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "team", "uid": f"uid-{name}", "generation": 1},
        "spec": spec,
    }


def settled(image: str) -> DeploymentProgress:
    return DeploymentProgress(True, "has 1/1 replicas available", 1, 1, 1, image)


def runtime_with(*bodies: dict[str, Any]) -> Runtime:
    """A runtime of the new operator, whose watch shows every Deployment on the old images."""
    runtime = Runtime(
        config=OperatorConfig(images=NEW),
        api=cast(KubernetesApi, None),  # every Deployment is known from its "watch"
        addresses=AddressMap(None),
        executor=ThreadPoolExecutor(1),
    )
    for item in bodies:
        runtime.instances.update(item)
        name = item["metadata"]["name"]
        runtime.deployments["team", name] = settled(item["spec"].get("image", OLD.service))
        runtime.deployments["team", f"{name}-postgres"] = settled(OLD.database)
    return runtime


def gate(runtime: Runtime, name: str) -> Any:
    raw = runtime.instances.get(("team", name))
    assert raw is not None
    return gate_default_images(runtime, raw, parse(raw, runtime.config.images))


def test_resources_on_the_default_roll_one_at_a_time_in_name_order() -> None:
    runtime = runtime_with(body("a"), body("b"), body("c"), body("pinned", image=PINNED))
    # "c" is reconciled first, but "a" comes first: "c" keeps both its images.
    late = gate(runtime, "c")
    assert (late.resource.spec.image, late.resource.spec.database.image) == (
        OLD.service,
        OLD.database,
    )
    assert late.waiting is not None
    assert "team/a rolls before it" in late.waiting
    assert late.notice is not None
    assert late.notice[0] == WAITING_FOR_ROLLOUT
    assert not late.retry  # woken in its turn, not polling
    assert runtime.rollout.held(("team", "c")) == HeldImages(OLD.service, OLD.database)

    first = gate(runtime, "a")
    assert (first.resource.spec.image, first.resource.spec.database.image) == (
        NEW.service,
        NEW.database,
    )
    assert first.waiting is None
    assert first.notice is not None
    assert first.notice[0] == ROLLING_OUT
    assert OLD.service in first.notice[1]
    assert NEW.service in first.notice[1]

    # "a" rolls (its Deployment now on the new image, pods being replaced): "b" waits for it.
    runtime.deployments["team", "a"] = DeploymentProgress(
        False, "is rolling out", 2, 1, 1, NEW.service, rolling_out=True
    )
    second = gate(runtime, "b")
    assert second.resource.spec.image == OLD.service
    assert second.waiting is not None
    assert "team/a is rolling" in second.waiting
    assert second.retry
    assert runtime.rollout.next_waiting() == ("team", "b")

    # A pinned service image is never moved; its database follows the default, and waits.
    pinned = gate(runtime, "pinned")
    assert pinned.resource.spec.image == PINNED
    assert pinned.resource.spec.database.image == OLD.database
    assert pinned.waiting is not None
    assert "the service keeps" not in pinned.waiting

    # "a" is done once both its Deployments run the new images, rolled out and available.
    runtime.deployments["team", "a"] = settled(NEW.service)
    assert gate(runtime, "b").resource.spec.image == OLD.service  # "a"'s database still rolls
    runtime.deployments["team", "a-postgres"] = settled(NEW.database)
    turn = gate(runtime, "b")
    assert turn.resource.spec.image == NEW.service
    assert turn.waiting is None


def test_a_pinned_image_and_an_edit_of_it_apply_at_once() -> None:
    runtime = runtime_with(body("a"), body("b", image=PINNED, database={"image": "pg:own"}))
    gate(runtime, "a")  # "a" rolls
    edited = body("b", image="registry/svc:edited", database={"image": "pg:own"})
    runtime.instances.update(edited)
    result = gate_default_images(runtime, edited, parse(edited, runtime.config.images))
    assert result.resource.spec.image == "registry/svc:edited"
    assert result.waiting is None
    assert result.notice is None


def test_a_resource_the_reconcile_refuses_holds_nobody_back() -> None:
    broken = body("a", database={"storage": {"hostPath": "/not/allowed"}})
    runtime = runtime_with(broken, body("b"), body("c"))
    waiting = gate(runtime, "c").waiting
    assert waiting is not None
    assert "team/b rolls before it" in waiting
    # Fixed (a new generation), it is first in line again.
    fixed = body("a")
    fixed["metadata"]["generation"] = 2
    runtime.instances.update(fixed)
    waiting = gate(runtime, "c").waiting
    assert waiting is not None
    assert "team/a rolls before it" in waiting


def test_a_new_resource_is_created_on_the_default_at_once() -> None:
    runtime = runtime_with(body("a"), body("b"))
    gate(runtime, "a")
    runtime.instances.update(body("new"))
    for name in ("new", "new-postgres"):
        runtime.deployments["team", name] = DeploymentProgress(False, "is missing")
    created = gate(runtime, "new")  # no Deployment yet: nothing to roll
    assert created.resource.spec.image == NEW.service
    assert created.waiting is None
