"""Which hits ban: the allowlist by exact address, canonical keys, the filter digest; memory."""

from __future__ import annotations

import ipaddress
import subprocess
import sys

import pytest

from blacklist_operator.banlist.core.addresses import address_key, key_text
from blacklist_operator.banlist.core.filters import allowed, filter_key, key_ranges


def key(text: str) -> int:
    found = address_key(text)
    assert found is not None
    return found


def test_allowlist_and_normalisation() -> None:
    networks = (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("::ffff:192.0.2.0/120"),
    )
    ranges = key_ranges(networks)
    assert allowed(key("10.1.2.3"), ranges)
    assert allowed(key("::1"), ranges)
    # An IPv4-mapped IPv6 CIDR covers the IPv4 addresses, as in the service.
    assert allowed(key("192.0.2.9"), ranges)
    assert not allowed(key("11.1.2.3"), ranges)
    assert address_key("::ffff:10.0.0.1") == address_key("10.0.0.1")
    assert key_text(key(" 2001:DB8::1 ")) == "2001:db8::1"
    assert address_key("garbage") is None
    assert filter_key(networks) == filter_key(tuple(reversed(networks)))
    assert filter_key(networks, 3600) != filter_key(networks)


def grown_kib(body: str) -> int:
    """KiB a fresh interpreter's peak RSS grew by while running ``body`` (Builder imported)."""
    script = (
        "import resource\n"
        "from blacklist_contract.prefixes import Prefix\n"
        "from blacklist_operator.banlist.core.rebuild import Builder\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"{body}"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    return int(subprocess.check_output([sys.executable, "-c", script], text=True))


@pytest.mark.process
def test_a_million_bans_rebuilt_and_merged_take_little_memory() -> None:
    grown = grown_kib(
        "builder = Builder(expiring=True)\n"
        "for i in range(1_000_000):\n"
        "    builder.add(Prefix(4, (i * 2654435761) % (1 << 32), 32), 1_767_225_600 + i % 86400)\n"
        "banlist = builder.finish()\n"
        "for i in range(20_000):\n"
        "    banlist.add(Prefix(6, (0x20010DB8 << 96) + (i << 64), 64), 1_767_300_000)\n"
        "banlist.merge()\n"
        "assert len(banlist) == 1_020_000\n"
    )
    # The list is 8 MB packed; a dict of Python ints, or two copies at once, would not fit.
    assert grown < 24 * 1024, f"grew {grown} KiB"


@pytest.mark.process
def test_a_million_bans_in_one_prefix_are_rebuilt_without_a_second_copy() -> None:
    # One IPv6 /32 (every IPv6 ban shares its top byte anyway): the rebuild's buckets are
    # crowded at every byte it splits by, so each split must not hold its bucket twice.
    grown = grown_kib(
        "builder = Builder(expiring=True)\n"
        "for i in range(1_000_000):\n"
        "    network = (0x20010DB8 << 96) + (((i * 2654435761) % (1 << 32)) << 64)\n"
        "    builder.add(Prefix(6, network, 64), 1_767_225_600 + i % 86400)\n"
        "assert len(builder.finish()) == 1_000_000\n"
    )
    # The list is 12 MB packed; the split used to copy each crowded bucket (101 MiB).
    assert grown < 40 * 1024, f"grew {grown} KiB"
