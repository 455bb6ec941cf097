"""The database tables both sides name: the service writes them, the operator reads them.

The columns are the service's table definitions (``blacklist_service.delivery.ledger``);
this module holds only the names, which the operator's queries, the service's schema and
``NOTIFY`` channel, and the tests must agree on (docs/CONTRACTS.md).
"""

from __future__ import annotations

# One row per accepted ``/blacklisted`` hit: (path, ip_address, time), with event_id.
LEDGER_TABLE = "denied_access_ledger"
# One row per lifted ban: an address or a CIDR, and when.
LIFTS_TABLE = "denied_access_lifts"
# The channel a new ledger or lift row is announced on (``NOTIFY``), the ledger's own name.
NOTIFY_CHANNEL = LEDGER_TABLE
