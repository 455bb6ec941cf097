"""The calls of ``blacklist_operator.metrics`` on the process's registry, without a cluster.

What a scrape shows after each call the ban sync makes, and that a forgotten
instance leaves nothing behind; ``test_metrics.py`` scrapes a real operator.
"""

from __future__ import annotations

import time
import uuid

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from blacklist_operator import metrics


def series_of(namespace: str) -> dict[str, float]:
    """``name{...}`` → value of every sample labelled with ``namespace``."""
    found = {}
    for family in text_string_to_metric_families(generate_latest(REGISTRY).decode()):
        for sample in family.samples:
            if sample.labels.get("namespace") == namespace and not sample.name.endswith("_created"):
                extra = {k: v for k, v in sample.labels.items() if k not in {"namespace", "name"}}
                found[f"{sample.name}{extra or ''}"] = sample.value
    return found


def test_a_ban_sync_from_start_to_forget() -> None:
    namespace = f"unit-{uuid.uuid4().hex[:8]}"
    key = (namespace, "bl")
    metrics.ban_sync_started(key)
    started = series_of(namespace)
    assert started["blacklist_operator_ban_sync_failures_total"] == 0
    assert 0 <= started["blacklist_operator_ban_sync_age_seconds"] < 5
    assert "blacklist_operator_banned_addresses" not in started

    metrics.ban_list_synced(key, 3, 7, int(time.time() * 1000) - 1500)
    synced = series_of(namespace)
    assert synced["blacklist_operator_banned_addresses"] == 3
    assert synced["blacklist_operator_ledger_rows_behind"] == 7
    assert synced["blacklist_operator_ban_latency_seconds_count"] == 1
    assert 1.4 < synced["blacklist_operator_ban_latency_seconds_sum"] < 5
    assert synced["blacklist_operator_ban_latency_seconds_bucket{'le': '1.0'}"] == 0
    assert synced["blacklist_operator_ban_latency_seconds_bucket{'le': '2.5'}"] == 1
    assert (
        abs(synced["blacklist_operator_ban_sync_last_success_timestamp_seconds"] - time.time()) < 5
    )

    metrics.ban_sync_failed(key, 3)
    metrics.ban_list_synced(key, 4, 0, None)  # a pass that read no new row: no latency
    again = series_of(namespace)
    assert again["blacklist_operator_ban_sync_failures_total"] == 1
    assert again["blacklist_operator_banned_addresses"] == 4
    assert again["blacklist_operator_ban_latency_seconds_count"] == 1

    metrics.forget_instance(key)
    assert series_of(namespace) == {}
    metrics.forget_instance(key)  # forgetting twice is harmless


def test_reconciles_are_counted_by_outcome() -> None:
    def count(outcome: str) -> float:
        value = REGISTRY.get_sample_value(
            "blacklist_operator_reconciles_total", {"outcome": outcome}
        )
        assert value is not None
        return value

    before = {outcome: count(outcome) for outcome in metrics.OUTCOMES}
    metrics.reconciled(metrics.OUTCOME_INVALID_SPEC, 0.01)
    assert count(metrics.OUTCOME_INVALID_SPEC) == before[metrics.OUTCOME_INVALID_SPEC] + 1
    assert count(metrics.OUTCOME_OK) == before[metrics.OUTCOME_OK]
