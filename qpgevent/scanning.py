"""What the content-scanner plugins share: reaching a daemon, bounding the wait, the message as a stream.

The protocol clients ``qpgevent.spamd``, ``qpgevent.clamd`` and ``qpgevent.rspamd`` speak
one daemon each; the plugins (``spamassassin``, ``virus/clamdscan``,
``rspamd``) decide what their answers mean for the mail.
"""
import socket
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import gevent

from . import arguments, sockets
from .constants import LOGINFO

DEFAULT_TIMEOUT = 20.0


class ScanError(Exception):
    """The daemon could not give a verdict: down, too slow, or an answer we cannot read."""


def connect(address: str, default_port: int, timeout: float) -> socket.socket:
    """A stream socket to ``address`` (qpgevent/sockets.py); ScanError when there is none."""
    try:
        return sockets.connect(address, timeout, default_port)
    except (OSError, ValueError) as exc:
        raise ScanError("cannot connect to %s: %s" % (address, exc)) from exc


@contextmanager
def bounded(seconds: float, what: str) -> Iterator[None]:
    """Raise ScanError if the block has not finished within ``seconds`` (whatever it waits on)."""
    timer = gevent.Timeout(seconds, ScanError("%s gave no answer within %ss" % (what, seconds)))
    timer.start()
    try:
        yield
    finally:
        timer.close()


def scan_timeout(plugin: Any, given: Optional[float], hook: str = "data_post") -> float:
    """The plugin's ``timeout`` argument, or 20 s (two thirds of ``plugin_timeout`` if that is less).

    A ``timeout`` at or over ``plugin_timeout`` becomes the scanning hook's own
    timeout (``set_hook_timeout``), with ``plugin_timeout`` more for the rest of
    the hook: the scan's limit and the daemon-down policy decide, not a plugin
    failure's 451.
    """
    limit = getattr(plugin.smtpd, "plugin_timeout", 0) or 0
    if given is None:
        return min(DEFAULT_TIMEOUT, limit * 2 / 3) if limit else DEFAULT_TIMEOUT
    if limit and given >= limit:
        plugin.set_hook_timeout(hook, given + limit)
    return given


def message_length(transaction: Any) -> int:
    """Bytes ``transaction.message_blocks()`` gives, counted from the spool without holding the message."""
    return sum(len(block) for block in transaction.message_blocks())


def rename_old_headers(header: Any, prefix: str, action: str) -> None:
    """Headers starting with ``prefix`` that came with the message: ``drop``, ``rename`` (X-Old-...) or ``keep``.

    Another host's verdict cannot be trusted; renaming keeps it readable
    without letting a filter downstream take it for ours.
    """
    if action == "keep":
        return
    old = [(name, value) for name, value in header if name.lower().startswith(prefix.lower())]
    for name in {name for name, _ in old}:
        header.delete(name)
    if action == "rename":
        for name, value in reversed(old):
            header.add("X-Old-" + name[2:] if name.lower().startswith("x-") else "Old-" + name, value, 0)


def spam_scan_wanted(plugin: Any, transaction: Any) -> bool:
    """The spam scanners' common start: False (logged) for a skipped relay client or a message over ``size_limit``;
    else the message's old X-Spam-* fields are dealt with (``leave_old_headers``) and True."""
    options = plugin.options
    if options.relayclient == "skip" and plugin.is_immune():
        return False
    if transaction.data_size > options.size_limit:
        plugin.log(LOGINFO, "skip, too large (%d bytes > size_limit %d)" % (transaction.data_size, options.size_limit))
        return False
    rename_old_headers(transaction.header, "X-Spam-", options.leave_old_headers)
    return True


def spam_scanner_arguments(relayclient: str, size_limit: int) -> dict:
    """The arguments spamassassin and rspamd share (what ``spam_scan_wanted`` reads), with their own defaults."""
    return {
        "headers": arguments.choice("add", "none", default="add"),
        "leave_old_headers": arguments.choice("rename", "drop", "keep", default="rename"),
        "relayclient": arguments.choice("scan", "skip", default=relayclient),
        "size_limit": arguments.integer(default=size_limit, minimum=0),
        "timeout": arguments.number(minimum=0.1),
        "defer_on_error": arguments.flag(),
    }
