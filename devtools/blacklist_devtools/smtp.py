"""A real SMTP server (aiosmtpd) that stores every mail it receives as a file.

Run it as a process, ``python -m blacklist_devtools.smtp --port P --mailbox DIR``,
or through :class:`SmtpServer`, which starts and stops that process so tests can
take the mail server down and bring it back on the same port. Each mail is
written to ``DIR/<time>-<uuid>.eml`` atomically (write, then rename), so a
reader never sees half a mail.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from blacklist_devtools.lifecycle import Server
from blacklist_devtools.net import free_port, wait_for_port


class MailboxHandler:
    """aiosmtpd handler that writes each accepted message into a directory."""

    def __init__(self, mailbox: Path) -> None:
        self.mailbox = mailbox

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        """Store the message, named so that files sort by arrival."""
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex}"
        partial = self.mailbox / f".{name}.partial"
        content: bytes = envelope.original_content or envelope.content
        with partial.open("wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        partial.rename(self.mailbox / f"{name}.eml")
        return "250 Message accepted for delivery"


def read_mailbox(mailbox: Path) -> list[EmailMessage]:
    """Parse every stored mail of ``mailbox``, oldest first."""
    messages: list[EmailMessage] = []
    for path in sorted(mailbox.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        messages.append(message)
    return messages


class SmtpServer(Server):
    """Controls one SMTP server process on a fixed loopback port."""

    def __init__(
        self, mailbox: Path | None = None, port: int | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.mailbox = mailbox or Path(tempfile.mkdtemp(prefix="blacklist-mail-"))
        self.mailbox.mkdir(parents=True, exist_ok=True)
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it accepts connections."""
        if self._process is not None and self._process.poll() is None:
            return
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "blacklist_devtools.smtp",
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--mailbox",
                str(self.mailbox),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.host, self.port, timeout)

    def stop(self) -> None:
        """Stop the server; mails already stored stay in the mailbox."""
        process = self._process
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self._process = None

    def messages(self) -> list[EmailMessage]:
        """Every mail received so far, oldest first."""
        return read_mailbox(self.mailbox)

    def wait_for(self, count: int, timeout: float) -> list[EmailMessage]:
        """Wait until at least ``count`` mails arrived; return all of them."""
        deadline = time.monotonic() + timeout
        while True:
            messages = self.messages()
            if len(messages) >= count or time.monotonic() >= deadline:
                return messages
            time.sleep(0.05)


async def _serve(host: str, port: int, mailbox: Path) -> None:
    from aiosmtpd.smtp import SMTP

    loop = asyncio.get_running_loop()
    handler = MailboxHandler(mailbox)
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="localhost", auth_require_tls=False),
        host=host,
        port=port,
    )
    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    async with server:
        await stopped.wait()


def main(argv: list[str] | None = None) -> None:
    """Serve SMTP on ``--host:--port`` until SIGTERM, storing mails in ``--mailbox``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--mailbox", type=Path, required=True)
    arguments = parser.parse_args(argv)
    arguments.mailbox.mkdir(parents=True, exist_ok=True)
    asyncio.run(_serve(arguments.host, arguments.port, arguments.mailbox))


if __name__ == "__main__":
    main()
