"""A ban as a line of text: ``PREFIX`` or ``PREFIX EXPIRY`` (pure, no I/O).

``PREFIX`` is :func:`blacklist_contract.prefixes.prefix_text`'s form: an
address for a full-length prefix (``203.0.113.7``, ``2001:db8::1``), else
``NETWORK/LENGTH`` (``2001:db8:0:1::/64``, ``198.51.100.0/24``). ``EXPIRY`` is
the Unix time in seconds when the ban ends; without it the ban lasts until it
is lifted. The head of a ban list (ConfigMap ``N-banlist``, key ``addresses``)
holds one such line per ban, so the newest bans are readable with ``kubectl``.
"""

from __future__ import annotations

from blacklist_contract.prefixes import Prefix, parse_prefix, prefix_text

FOREVER = 0
# Expiries are carried as unsigned 32-bit seconds on the wire (until 2106).
MAX_EXPIRY = 0xFFFFFFFF

Ban = tuple[Prefix, int]  # (prefix, expiry: Unix seconds, FOREVER = never)


def format_line(prefix: Prefix, expiry: int) -> str:
    """The line of a ban (no newline)."""
    text = prefix_text(prefix)
    return text if expiry == FOREVER else f"{text} {expiry}"


def parse_line(line: str) -> Ban | None:
    """The ban a line states, or None if the line is not one."""
    parts = line.split()
    if not parts or len(parts) > 2:
        return None
    prefix = parse_prefix(parts[0])
    if prefix is None:
        return None
    if len(parts) == 1:
        return prefix, FOREVER
    expiry = parts[1]
    if not expiry.isascii() or not expiry.isdigit() or len(expiry) > 10:
        return None
    value = int(expiry)
    if value <= 0 or value > MAX_EXPIRY:
        return None
    return prefix, value


def format_lines(bans: list[Ban]) -> str:
    """The text of many bans, one line each, in the order given."""
    return "".join(format_line(prefix, expiry) + "\n" for prefix, expiry in bans)


def parse_lines(text: str) -> tuple[list[Ban], list[str]]:
    """The bans of a text and the non-blank lines that are not bans."""
    bans: list[Ban] = []
    bad: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parsed = parse_line(line)
        if parsed is None:
            bad.append(line)
        else:
            bans.append(parsed)
    return bans, bad
