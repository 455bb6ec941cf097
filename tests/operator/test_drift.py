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


def test_quantities_are_compared_by_value_not_as_text() -> None:
    # The API server stores quantities in canonical form: 1024Mi reads back as 1Gi.
    desired = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "resources": {
                                "requests": {"cpu": "0.5", "memory": "1024Mi"},
                                "limits": {"memory": "1Gi", "cpu": "1000m"},
                            }
                        }
                    ]
                }
            }
        }
    }
    live = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "resources": {
                                "requests": {"cpu": "500m", "memory": "1Gi"},
                                "limits": {"memory": "1024Mi", "cpu": "1"},
                            }
                        }
                    ]
                }
            }
        }
    }
    assert contains(live, desired)
    assert contains(
        {"spec": {"capacity": {"storage": "1Gi"}}}, {"spec": {"capacity": {"storage": "1024Mi"}}}
    )
    changed = {"resources": {"requests": {"memory": "1025Mi"}}}
    assert not contains({"resources": {"requests": {"memory": "1Gi"}}}, changed)


def test_only_resource_quantities_are_compared_by_value() -> None:
    # A label that happens to read like a quantity is still text.
    assert not contains({"labels": {"size": "1k"}}, {"labels": {"size": "1000"}})
