"""The replica's ban list: a memory-mapped snapshot shared by every worker, plus a small log.

:mod:`~blacklist_service.bans.records` (the log's fixed records),
:mod:`~blacklist_service.bans.snapshot` (sorted packed columns in a file, read
through ``mmap`` and built by streaming), :mod:`~blacklist_service.bans.store`
(the two together: lookups, bans, lifts, folding, generations; its files in
:mod:`~blacklist_service.bans.files`, what its values mean and what a new
generation keeps in :mod:`~blacklist_service.bans.values`),
:mod:`~blacklist_service.bans.lines` (what the operator's head lines change),
:mod:`~blacklist_service.bans.watcher` (follows the operator's head and parts)
and :mod:`~blacklist_service.bans.notices` (the log lines of new bans).
See docs/service.md, "Ban list shared by the workers".
"""
