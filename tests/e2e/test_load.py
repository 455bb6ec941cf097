"""Load: 10 clients for 30 s across 2 replicas, from 1,000 addresses, squares mixed with bans.

Afterwards every banned address is refused by both replicas, the ledger holds
exactly one row per accepted ``/blacklisted`` hit (a ``444``), and the SMTP
server received exactly one mail per row.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest

from blacklist_devtools import stack
from blacklist_devtools.http import get
from blacklist_devtools.kube import wait_until
from blacklist_devtools.network import client_address
from blacklist_devtools.stack import Deployed

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

CLIENTS = 10
DURATION = 30.0
ADDRESSES = [client_address(index) for index in range(1000)]


@dataclass
class Tally:
    """What one client saw."""

    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    accepted_hits: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)


def client(urls: list[str], addresses: list[str], seed: int, tally: Tally) -> None:
    """Call random replicas from random addresses of ``addresses`` until the time is up."""
    chooser = random.Random(seed)
    banned: set[str] = set()
    deadline = time.monotonic() + DURATION
    while time.monotonic() < deadline:
        address = chooser.choice(addresses)
        url = chooser.choice(urls)
        if chooser.random() < 0.1:
            answer = get(f"{url}/blacklisted", source=address)
            tally.statuses[("blacklisted", answer.status)] += 1
            if answer.status == 444:
                tally.accepted_hits[address] += 1
                banned.add(address)
            elif answer.status != 403:
                tally.wrong.append(f"/blacklisted from {address}: {answer.status}")
        else:
            number = chooser.randint(-1000, 1000)
            answer = get(f"{url}/?n={number}", source=address)
            tally.statuses[("square", answer.status)] += 1
            if answer.status == 200:
                if answer.body != repr(float(number) * float(number)):
                    tally.wrong.append(f"?n={number} answered {answer.body}")
            elif answer.status != 403:
                tally.wrong.append(f"?n={number} from {address}: {answer.status}")


def ledger_rows(deployed: Deployed) -> Counter[str]:
    return Counter(address for _, address in stack.ledger_rows(deployed.instance()))


def test_mixed_load_from_a_thousand_addresses(deployed: Deployed) -> None:
    urls = list(deployed.instance().service_urls)
    assert len(urls) == 2
    tallies = [Tally() for _ in range(CLIENTS)]
    threads = [
        threading.Thread(
            target=client, args=(urls, ADDRESSES[index::CLIENTS], index, tallies[index])
        )
        for index in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    wrong = [line for tally in tallies for line in tally.wrong]
    assert not wrong, wrong[:10]
    accepted: Counter[str] = sum((tally.accepted_hits for tally in tallies), Counter())
    squares = sum(tally.statuses[("square", 200)] for tally in tallies)
    assert squares > 1000, "the load generator hardly ran"
    assert len(accepted) > 100, "too few addresses were banned to prove anything"

    # Every banned address is refused by both replicas.
    def all_refused() -> bool:
        return all(
            get(f"{url}/?n=1", source=address).status == 403 for address in accepted for url in urls
        )

    assert wait_until(all_refused, timeout=30, interval=0.5)
    # One ledger row per accepted hit, no more, no less.
    assert wait_until(lambda: ledger_rows(deployed) == accepted, timeout=60, interval=0.5)
    # One mail per row, none twice.
    total = sum(accepted.values())
    messages = deployed.smtp.wait_for(total, timeout=60)
    assert len(messages) == total
    identifiers = [message["Message-ID"] for message in messages]
    assert len(set(identifiers)) == total
