"""The ledger's index on ``time``: made for new and existing ledgers, and the lift path uses it.

The operator's lift of a range wider than one ban reads the ledger's hits since
the lift (``HITS_SINCE_QUERY``). Without an index on ``time`` that read scans
the whole ledger, once per such lift. The service's ``ensure_schema`` makes the
index with ``CREATE INDEX IF NOT EXISTS``, also on a ledger an earlier version
made without it; run again it changes nothing. Checked on the real PostgreSQL.
"""

from __future__ import annotations

import time

import psycopg2.extras
import pytest

from blacklist_devtools.ledger_schema import schema_sql
from blacklist_devtools.postgres import PostgresServer
from blacklist_operator.banlist.sync.ledger import HITS_SINCE_QUERY
from blacklist_service.delivery import ledger

pytestmark = [pytest.mark.postgres]

# The ledger as versions before this index made it: the same table without it.
EARLIER_LEDGER = schema_sql(ledger.ledger, leaving_out={"denied_access_ledger_time"})
ROWS = 50_000


def indexes(postgres: PostgresServer) -> set[str]:
    with postgres.connect() as connection, connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'denied_access_ledger'")
        return {name for (name,) in cursor.fetchall()}


def plan_of_hits_since(postgres: PostgresServer, since_ms: int) -> str:
    with postgres.connect() as connection, connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {HITS_SINCE_QUERY}", (since_ms,))
        return "\n".join(line for (line,) in cursor.fetchall())


def test_an_earlier_ledger_gets_the_time_index_and_a_lift_read_uses_it(
    empty_ledger: PostgresServer,
) -> None:
    postgres = empty_ledger
    now_ms = int(time.time() * 1000)
    with postgres.connect() as connection, connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS denied_access_lifts")
        cursor.execute(EARLIER_LEDGER)
        # A day of hits, one every ~1.7 s: a lift made a minute ago reads the last few.
        psycopg2.extras.execute_values(
            cursor,
            "INSERT INTO denied_access_ledger (event_id, path, ip_address, time) VALUES %s",
            [
                (
                    f"e-{index}",
                    "/blacklisted",
                    f"10.{index >> 16}.{index >> 8 & 255}.{index & 255}",
                    (now_ms - index * 1_728) / 1000.0,
                )
                for index in range(ROWS)
            ],
            template="(%s, %s, %s, to_timestamp(%s))",
            page_size=10_000,
        )
        cursor.execute("ANALYZE denied_access_ledger")
    since = now_ms - 60_000
    assert "Seq Scan" in plan_of_hits_since(postgres, since)

    engine = ledger.make_engine(postgres.url)
    try:
        ledger.ensure_schema(engine)
        ledger.ensure_schema(engine)  # at every start: idempotent
    finally:
        engine.dispose()

    assert "denied_access_ledger_time" in indexes(postgres)
    with postgres.connect() as connection, connection.cursor() as cursor:
        cursor.execute("ANALYZE denied_access_ledger")
    plan = plan_of_hits_since(postgres, since)
    assert "denied_access_ledger_time" in plan, plan
    assert "Seq Scan" not in plan, plan


def test_a_new_ledger_is_made_with_the_time_index(empty_ledger: PostgresServer) -> None:
    engine = ledger.make_engine(empty_ledger.url)
    try:
        ledger.ensure_schema(engine)
    finally:
        engine.dispose()
    assert {"denied_access_ledger_time", "denied_access_ledger_ip_address"} <= indexes(empty_ledger)
