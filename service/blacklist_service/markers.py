"""Marker files in ``STATE_DIR`` through which the replica's processes share what they know.

Every server worker answers ``/readyz`` and ``/metrics``, but only the one
that holds the leader lock talks to the ledger and the Kubernetes API; it
records what it achieved as empty files the others can see. A marker that a
previous run left behind would claim something this run has not done yet, so
:func:`clear_markers` removes them all before any worker starts.
"""

from __future__ import annotations

from pathlib import Path


def synced_marker(state_dir: Path) -> Path:
    """The file that says this replica has read the cluster's ban list at least once."""
    return state_dir / "banlist.synced"


def ledger_marker(state_dir: Path) -> Path:
    """The file that says this replica's last attempt to reach the ledger succeeded."""
    return state_dir / "ledger.connected"


def bans_loaded_marker(state_dir: Path) -> Path:
    """The file that says this run has loaded the bans recorded in the ledger."""
    return state_dir / "ledger.bans-loaded"


def clear_markers(state_dir: Path) -> None:
    """Forget what a previous run of the replica knew (call once per start, before workers)."""
    for marker in (synced_marker, ledger_marker, bans_loaded_marker):
        marker(state_dir).unlink(missing_ok=True)
