"""The ban sync: from the ledger table in PostgreSQL to the ban-list ConfigMaps.

``core`` is pure (the packed list, its ConfigMap layout, filters, rebuilds, address keys);
``sync`` does the I/O (the ledger, the ConfigMap store, connections, the passes and their
supervisor).
"""
