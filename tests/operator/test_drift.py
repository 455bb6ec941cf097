"""Drift detection compares what we built with what the API server holds."""

from __future__ import annotations

from blacklist_operator.builders.drift import contains


def test_defaults_added_by_the_server_are_not_drift() -> None:
    desired = {"spec": {"replicas": 2, "template": {"containers": [{"name": "a"}]}}}
    live = {
        "spec": {
            "replicas": 2,
            "progressDeadlineSeconds": 600,
            "template": {"containers": [{"name": "a", "terminationMessagePath": "/dev/x"}]},
        },
        "status": {"replicas": 2},
    }
    assert contains(live, desired)


def test_changed_removed_or_added_items_are_drift() -> None:
    desired = {"spec": {"replicas": 2, "ports": [{"port": 1}]}}
    assert not contains({"spec": {"replicas": 3, "ports": [{"port": 1}]}}, desired)
    assert not contains({"spec": {"ports": [{"port": 1}]}}, desired)
    assert not contains({"spec": {"replicas": 2, "ports": [{"port": 1}, {"port": 2}]}}, desired)
    assert contains({"a": 5004}, {"a": "5004"})
