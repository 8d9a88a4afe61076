"""The one log line per message and per session that the default log level keeps (as Postfix logs).

Built only when the line will be written (the session checks the level
first): a busy server pays a few microseconds per message, nothing more.
"""
import time
from typing import Any, Optional

from .transaction import Transaction


def reply_line(wire: Optional[bytes]) -> str:
    """The first line of a reply as sent (``250 2.0.0 Queued! ...``), or ``-`` for none."""
    if not wire:
        return "-"
    return wire.split(b"\r\n", 1)[0].decode("utf-8", "replace")


def message_line(transaction: Transaction, size: int, reply: Optional[bytes]) -> str:
    """``message <id>: from=<...> to=<...>,<...> size=N result=<first reply line> time=S``."""
    sender = transaction.sender.format() if transaction.sender is not None else "-"
    recipients = ",".join(r.format() for r in transaction.recipients) or "-"
    return "message %s: from=%s to=%s size=%d result=%s time=%.3fs" % (
        transaction.id, sender, recipients, size, reply_line(reply), time.time() - transaction.started)


def session_line(session: Any, ended: str) -> str:
    """``session end: client=host[ip]:port helo=... tls=... auth=... messages=A/N commands=C time=S end=...``."""
    connection = session.connection
    notes = connection.notes
    tls = "%s/%s" % (notes.get("tls_version"), notes.get("tls_cipher")) if notes.get("tls_enabled") else "no"
    host = connection.remote_info
    if host.startswith("["):  # no name known: Postfix's "unknown[ip]", not the address twice
        host = "unknown"
    return "session end: client=%s[%s]:%s helo=%s tls=%s auth=%s messages=%d/%d commands=%d time=%.3fs end=%s" % (
        host, connection.remote_ip, connection.remote_port, connection.hello_host or "-", tls,
        session.auth_user or "-", session.messages_accepted, session.messages, session.command_counter,
        time.time() - connection.started, ended)
