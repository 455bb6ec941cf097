"""The I/O half of the ban list: read the ledger, write the ConfigMaps, one pass per resource."""
