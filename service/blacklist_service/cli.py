"""``python -m blacklist_service lift ADDRESS|CIDR [...] [--reason TEXT]``: lift bans.

An address lifts every ban that covers it (its ``/24`` or ``/64`` when bans
are by prefix, and a CIDR ban holding it); a CIDR (``2001:db8:1:2::/64``)
lifts the ban of exactly that prefix. It writes one row per argument to the
lift table ``denied_access_lifts`` of the
database the server uses (the same ``DATABASE_URL``, or the standalone SQLite
file), and on PostgreSQL notifies ``denied_access_ledger`` in the same
transaction so the operator syncs at once. Every replica applies the lift
within a second or so; the ledger rows stay. In a cluster:
``kubectl exec deploy/N -- python -m blacklist_service lift 1.2.3.4``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sqlalchemy.exc import SQLAlchemyError

from blacklist_contract.prefixes import parse_prefix, prefix_text
from blacklist_service.address_keys import normalise
from blacklist_service.config import ConfigError, Settings, defaults, from_environment
from blacklist_service.delivery import ledger

MAX_REASON_LENGTH = 256  # the lift table's reason column


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m blacklist_service``."""
    main = argparse.ArgumentParser(
        prog="python -m blacklist_service",
        description="Without a command: run the server on PORT.",
    )
    commands = main.add_subparsers(dest="command", required=True)
    lift = commands.add_parser(
        "lift",
        help="lift the ban on addresses (the ledger keeps their rows)",
        description="Lift the ban on each ADDRESS in every replica; the ledger keeps its rows.",
    )
    lift.add_argument(
        "addresses",
        nargs="+",
        metavar="ADDRESS",
        help="IPv4 or IPv6 address (lifts the bans covering it), or CIDR (lifts that prefix)",
    )
    lift.add_argument("--reason", default="", help="why, kept with the lift (256 characters)")
    return main


def canonical(text: str) -> str | None:
    """The canonical text of an address or CIDR, or None if it is neither."""
    if "/" in text:
        prefix = parse_prefix(text)
        return None if prefix is None else prefix_text(prefix)
    return normalise(text)


def canonical_addresses(arguments: argparse.Namespace, main: argparse.ArgumentParser) -> list[str]:
    """The canonical text of each address or CIDR, in order, once each; usage error on a bad one."""
    found: list[str] = []
    bad = [text for text in arguments.addresses if canonical(text) is None]
    if bad:
        main.error(f"not an IP address or CIDR: {', '.join(bad)} (nothing was lifted)")
    for text in arguments.addresses:
        address = canonical(text)
        if address is not None and address not in found:
            found.append(address)
    if len(arguments.reason) > MAX_REASON_LENGTH:
        main.error(f"--reason is longer than {MAX_REASON_LENGTH} characters")
    return found


def lift(addresses: list[str], reason: str) -> int:
    """Write the lifts; report them; the exit status."""
    try:
        config = defaults()
        config.update(from_environment())
        settings = Settings.from_config(config)
    except ConfigError as error:
        print(f"bad configuration: {error}", file=sys.stderr)
        return 1
    engine = ledger.make_engine(settings.database_url)
    try:
        ledger.ensure_schema(engine)
        made = ledger.insert_lifts(engine, addresses, reason)
    except SQLAlchemyError as error:
        print(f"could not reach the ledger: {str(error).splitlines()[0]}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    for row in made:
        print(f"Lifted the ban on {row.ip_address} at {row.time.isoformat()} (lift {row.id})")
    return 0


def main(argv: Sequence[str]) -> int:
    """Run the command in ``argv`` (without the program name); the exit status."""
    main_parser = parser()
    arguments = main_parser.parse_args(argv)
    addresses = canonical_addresses(arguments, main_parser)
    return lift(addresses, arguments.reason)
