"""Reading what a set-aside outbox still holds, without writing to it.

An outbox file set aside as corrupt (:mod:`blacklist_service.delivery.outbox`) may
still hold hits whose ledger row or mail is owed; they are read here, as far
as the file reads, and copied into the fresh outbox by its owner.
"""

from __future__ import annotations

import logging
import sqlite3
from contextlib import closing
from pathlib import Path

logger = logging.getLogger("blacklist_service.outbox")

SalvagedRow = tuple[str, str, str, str, int, int]


def salvage(path: Path) -> list[SalvagedRow]:
    """The undelivered rows of a set-aside outbox, read without writing to it."""
    rows: list[SalvagedRow] = []
    error: sqlite3.Error | None = None
    # Read-only first (it sees the WAL's commits); immutable when even that cannot open it.
    for mode in ("mode=ro", "immutable=1"):
        try:
            with closing(sqlite3.connect(f"{path.resolve().as_uri()}?{mode}", uri=True)) as source:
                cursor = source.execute(
                    "SELECT event_id, ip_address, path, time, ledger_delivered, mail_delivered "
                    "FROM outbox WHERE ledger_delivered = 0 OR mail_delivered = 0"
                )
                while batch := cursor.fetchmany(500):
                    rows.extend(batch)
            return rows
        except sqlite3.Error as failure:
            error = failure
            if rows:
                break  # read part-way: keep what was read rather than read it twice
    logger.error("Read %d hit(s) of the set-aside outbox %s, then: %s", len(rows), path, error)
    return rows
