"""The contract between the operator, which writes the ban list, and the service, which reads it.

One package both images carry, so the two sides cannot drift apart:
:mod:`blacklist_contract.prefixes` (an address, its covering prefix and their
text), :mod:`blacklist_contract.lines` (a ban as a line of text) and
:mod:`blacklist_contract.wire` (a compacted snapshot of bans as packed binary
sections, and the names of the ConfigMaps that carry it); also
:mod:`blacklist_contract.database` (an external database's URL) and
:mod:`blacklist_contract.logs` (the keys of a JSON log line). Pure: no I/O.
"""
