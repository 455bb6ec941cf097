"""Pure tests of which existing objects a reconcile may apply over: only its own children."""

from __future__ import annotations

import copy
from typing import Any

from blacklist_operator.builders import build_children
from blacklist_operator.builders.ownership import created_by
from blacklist_operator.model.resource import BlacklistService, parse


def make(name: str = "demo", uid: str = "uid-1", **storage: Any) -> BlacklistService:
    return parse(
        {
            "metadata": {"name": name, "namespace": "team", "uid": uid, "generation": 1},
            "spec": {"database": {"storage": storage}} if storage else {},
        }
    )


def test_every_child_as_built_is_its_resources_own() -> None:
    bls = make()
    for child in build_children(bls):
        assert created_by(child, bls), child["kind"]


def test_an_object_someone_else_made_is_not_ours() -> None:
    bls = make()
    service = next(child for child in build_children(bls) if child["kind"] == "Service")
    foreign = {"metadata": {"name": "demo", "labels": {"team": "web"}}}
    assert not created_by(foreign, bls)
    # Our labels copied onto an object that another resource controls: still not ours.
    other = copy.deepcopy(service)
    other["metadata"]["ownerReferences"][0]["uid"] = "uid-2"
    assert not created_by(other, bls)
    # Our owner reference without our managed-by label: not ours either.
    unlabelled = copy.deepcopy(service)
    unlabelled["metadata"]["labels"] = {}
    assert not created_by(unlabelled, bls)


def test_a_claim_kept_by_retain_on_delete_is_taken_up_by_its_successor() -> None:
    first = make(uid="uid-1", retainOnDelete=True)
    successor = make(uid="uid-2", retainOnDelete=True)
    (claim,) = [c for c in build_children(first) if c["kind"] == "PersistentVolumeClaim"]
    assert "ownerReferences" not in claim["metadata"]
    assert created_by(claim, successor)
    # Kept by another resource's name: not ours.
    assert not created_by(claim, make("other", uid="uid-3"))
