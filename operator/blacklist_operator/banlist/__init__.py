"""The ban sync: from the ledger table in PostgreSQL to the ban-list ConfigMaps."""
