"""Between a replica and the outside world: hits out to the ledger and mail, lifts in.

A ``/blacklisted`` hit is written to the durable :mod:`.outbox` on the request
path and nothing more; the delivery worker (:mod:`.courier`) moves it into the
ledger table (:mod:`.ledger`) and out as an alert mail (:mod:`.alerts`), each
exactly once. The same worker follows the ledger's lift table and, run alone,
loads the ledger's bans at start (:mod:`.lifts`). An outbox file found corrupt
is set aside and read back as far as it reads (:mod:`.salvage`).
"""
