"""virus/clamdscan: scan the message with ClamAV's daemon, clamd; refuse a virus or mark it in the headers.

Arguments (qpsmtpd's, as pairs)::

    virus/clamdscan [clamd_socket PATH] [clamd_host HOST] [clamd_port PORT] [deny_viruses yes|no]
                    [max_size KB] [scan_all 1|0] [defer_on_error 1|0] [timeout SECONDS] [loglevel N]

``clamd_socket PATH``
    clamd's unix socket (its ``LocalSocket``; default Debian's
    ``/var/run/clamav/clamd.ctl``).
``clamd_host HOST`` / ``clamd_port PORT``
    clamd's TCP socket (``TCPAddr``/``TCPSocket``); a port, when given, wins
    over the unix socket.  The host defaults to ``127.0.0.1``.
``deny_viruses yes|no``
    ``yes`` (default): refuse a message with a virus, ``552 5.7.1 Virus
    found: NAME``.  ``no``: accept it with ``X-Virus-Found: Yes`` and
    ``X-Virus-Details: NAME``.
``max_size KB``
    Messages over this many kilobytes are not scanned (default 1024).  Keep
    it under clamd's ``StreamMaxLength``, or big messages fail as errors.
``scan_all 1|0``
    ``1`` (default): scan every message; ``0``: only multipart ones (a virus
    needs an attachment).
``defer_on_error 1|0``
    What happens when clamd is down, too slow or refuses the scan.  ``1``
    (default here): fail closed, ``452 4.3.0 Unable to scan for viruses, try
    again later``, so no unscanned mail gets in and none is lost (the client
    retries).  ``0``: fail open: log, note ``clamdscan_error`` in the
    transaction, and accept the message unscanned.
``timeout SECONDS``
    The longest the scan may take (default 20, or two thirds of
    ``plugin_timeout`` if that is less; a longer one lengthens the
    hook's bound to match).

A clean message gets ``X-Virus-Found: No`` and ``X-Virus-Checked: by
ClamAV 1.4.6 on ME`` (clamd's version, without its database's).  ``X-Virus-*`` headers the message arrived with
are removed first: they are another host's word, or a forgery.  A virus
costs a point of karma.  Connections with a deferred refusal (``naughty``)
are not scanned: they will be refused anyway.

The message (its headers as they are now, and the body from the spool) is
streamed to clamd with INSTREAM, so clamd needs no access to our spool
directory and can run on another host.

Differences from qpsmtpd: no ClamAV::Client, and INSTREAM always, not
clamd reading our spool file by path (no spool permission games); a clamd
failure defers the message by default (qpsmtpd let it through unscanned
unless ``defer_on_error`` was set: a virus scanner that is down should not
let viruses in); old X-Virus headers are removed; every wait is bounded.

Config files: none (``me`` for X-Virus-Checked).
"""
import re

from qpgevent import DECLINED, DENY, DENYSOFT, LOGERROR, LOGINFO, LOGNOTICE, arguments, clamd
from qpgevent.scanning import ScanError, bounded, scan_timeout

_MULTIPART = re.compile(r"\bmultipart/.*\bboundary=", re.I | re.S)
_HEADERS = ("X-Virus-Found", "X-Virus-Details", "X-Virus-Checked")

ARGUMENTS = {
    "clamd_socket": arguments.text(default="/var/run/clamav/clamd.ctl"),
    "clamd_host": arguments.text(default="127.0.0.1"),
    "clamd_port": arguments.integer(minimum=1, maximum=65535),
    "deny_viruses": arguments.flag(default=True),
    "max_size": arguments.integer(default=1024, minimum=0),
    "scan_all": arguments.flag(default=True),
    "defer_on_error": arguments.flag(default=True),
    "timeout": arguments.number(minimum=0.1),
}


def register(self, qp, *args):
    options = self.options
    if options.clamd_port:
        host = options.clamd_host
        self.address = "[%s]:%d" % (host, options.clamd_port) if ":" in host else "%s:%d" % (host, options.clamd_port)
    else:
        self.address = options.clamd_socket
    self.timeout = scan_timeout(self, options.timeout)


def hook_data_post(self, transaction):
    if self.is_naughty():
        self.log(LOGINFO, "skip, naughty")
        return DECLINED
    if not should_scan(self, transaction):
        return DECLINED
    header = transaction.header
    for name in _HEADERS:
        header.delete(name)
    try:
        with bounded(self.timeout, "clamd at %s" % self.address):
            version = clamd.version(self.address, self.timeout).split("/")[0]
            found = clamd.instream(self.address, transaction.message_blocks(), self.timeout)
    except ScanError as exc:
        transaction.notes["clamdscan_error"] = str(exc)
        if self.options.defer_on_error:
            self.log(LOGERROR, "error, deferring the message: %s" % exc)
            return DENYSOFT, "Unable to scan for viruses, try again later (#4.3.0)"
        self.log(LOGERROR, "error, message not scanned (failing open): %s" % exc)
        return DECLINED
    if found:
        self.log(LOGNOTICE, "fail, found virus %s" % found)
        self.adjust_karma(-1)
        if self.options.deny_viruses:
            return DENY, "Virus found: %s (#5.7.1)" % found
        header.add("X-Virus-Found", "Yes", 0)
        header.add("X-Virus-Details", found, 0)
        return DECLINED
    self.log(LOGINFO, "pass, clean")
    header.add("X-Virus-Found", "No", 0)
    header.add("X-Virus-Checked", "by %s on %s" % (version, self.qp.me), 0)
    return DECLINED


def should_scan(self, transaction) -> bool:
    size = transaction.data_size
    if size > self.options.max_size * 1024:
        self.log(LOGINFO, "skip, too big (%d bytes > max_size %d KB)" % (size, self.options.max_size))
        return False
    if self.options.scan_all:
        return True
    if not _MULTIPART.search(transaction.header.get("Content-Type") or ""):
        self.log(LOGINFO, "skip, not multipart")
        return False
    return True
