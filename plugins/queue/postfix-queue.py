"""queue/postfix-queue: hand each message to Postfix's ``cleanup`` service, as Postfix's own smtpd does.

Arguments (as in qpsmtpd)::

    queue/postfix-queue [SOCKET] [FLAG_...]... [timeout SECONDS]

``SOCKET``
    The cleanup service: a unix socket path (default
    ``/var/spool/postfix/public/cleanup``; it must start with ``/``).
``FLAG_...``
    Processing flags for cleanup, none by default; as in qpsmtpd:
    ``FLAG_FILTER`` (header_checks, body_checks, content_filter),
    ``FLAG_BCC_OK`` (recipient_bcc_maps, always_bcc), ``FLAG_MAP_OK``
    (virtual_alias_maps, canonical_maps), ``FLAG_MILTER`` (non_smtpd_milters),
    ``FLAG_MASK_EXTERNAL`` (all four: what Postfix uses for mail from
    outside, and usually what you want), ``FLAG_FILTER_ALL``,
    ``FLAG_MASK_INTERNAL``, ``FLAG_BOUNCE``, ``FLAG_HOLD`` (every message on
    hold), ``FLAG_DISCARD`` (every message thrown away: do not), ``FLAG_NONE``.
``timeout SECONDS``
    The longest any one wait on cleanup may last (connect, each write, the
    final answer; default 20).  The whole hand-off is bounded by
    ``plugin_timeout`` as well.

Config files: ``cleanup_sockets``, one cleanup service a line, tried in order
until one answers: a unix socket path or ``host:port`` of a cleanup service
that master.cf lists as an ``inet`` service (``[v6]:port`` for IPv6).  The
environment variable ``POSTFIXQUEUE`` (one such service) overrides the file,
and the file overrides the argument, as in qpsmtpd.

The message goes to cleanup as Postfix's smtpd sends it: the envelope (sender,
recipients, the DSN ``RET``/``ENVID``/``NOTIFY``/``ORCPT`` of the client, so
the plugin declares ``DSN``), ``rewrite_context=remote`` (cleanup leaves the
headers of mail from outside as they are), then the content line by line,
streamed from the spool.  The client hears ``250`` only once cleanup answers
status 0: the queue file is then fsync'd in Postfix's ``incoming`` queue.
cleanup's other answers map as Postfix's smtpd maps them: a temporary one
(``DEFER``, ``PROXY``, ``BAD``, ``WRITE``) gives ``452`` with cleanup's reason,
a permanent one (``RCPT``, ``HOPS``, ``SIZE``, ``CONT``, ``NOPERM``) gives
``552`` with it (a header_checks ``REJECT`` text reaches the client).  No
cleanup reachable, a broken connection or a timeout: ``451``, and the client
keeps the message.

Differences from qpsmtpd: an unknown flag or argument stops start-up (qpsmtpd
logged and ignored it, so a typo such as ``FLAG_MASK_EXTERNALL`` silently
disabled Postfix's checks); every wait is bounded; the DSN parameters and
``SMTPUTF8`` are passed on (qpsmtpd dropped them); ``rewrite_context=remote``
is sent (without it cleanup treated the mail as local submission and could
rewrite its headers); failures are a 451 with a log line, not a Perl ``die``.
A ``BODY=BINARYMIME`` message is refused with ``552 5.6.1``: Postfix stores
mail as lines and cannot keep its octets.
"""
import os

from qpgevent import DECLINED, DENY, DENYSOFT, LOGERROR, LOGINFO, LOGWARN, OK
from qpgevent import postfix_cleanup as cleanup

CAPABILITIES = ["DSN"]
DEFAULT_SOCKET = "/var/spool/postfix/public/cleanup"
DEFAULT_TIMEOUT = 20.0
_GENERIC = ("loglevel", "reject", "reject_type")


def register(self, qp, *args):
    self.cleanup_socket = DEFAULT_SOCKET
    self.cleanup_flags = 0
    self.timeout = DEFAULT_TIMEOUT
    words = list(args)
    if words and words[0].startswith("/"):
        self.cleanup_socket = words.pop(0)
    while words:
        word = words.pop(0)
        if word in _GENERIC or word == "timeout":
            if not words:
                raise ValueError("%r needs a value, e.g. 'timeout 20'" % word)
            value = words.pop(0)
            if word == "timeout":
                self.timeout = _timeout(value, qp.plugin_timeout)
        elif word in cleanup.FLAGS:
            self.cleanup_flags |= cleanup.FLAGS[word]
        else:
            raise ValueError("unknown argument %r: write [SOCKET] [FLAG_...]... [timeout SECONDS], the socket an "
                             "absolute path, the flags among %s" % (word, ", ".join(sorted(cleanup.FLAGS))))
    if self.cleanup_flags & cleanup.FLAGS["FLAG_DISCARD"]:
        self.log(LOGWARN, "FLAG_DISCARD: Postfix throws every message away")


def _timeout(value, plugin_timeout):
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0
    if seconds <= 0:
        raise ValueError("timeout %r is not a positive number of seconds; write e.g. 'timeout 20'" % value)
    if plugin_timeout and seconds >= plugin_timeout:
        raise ValueError("timeout %s would outlast plugin_timeout (%ss); wait less or raise plugin_timeout"
                         % (value, plugin_timeout))
    return seconds


def cleanup_addresses(self):
    """Where to hand the message, in order: $POSTFIXQUEUE, else config cleanup_sockets, else the argument."""
    if os.environ.get("POSTFIXQUEUE"):
        return [os.environ["POSTFIXQUEUE"]]
    return self.qp.config_list("cleanup_sockets") or [self.cleanup_socket]


def hook_queue(self, transaction):
    if transaction.binary:
        return DENY, "5.6.1 Postfix cannot take BINARYMIME content; send it with BODY=8BITMIME"
    flags = self.cleanup_flags
    if "smtputf8" in transaction.notes.get("mail_parameters", {}):
        flags |= cleanup.FLAG_SMTPUTF8
    envelope = cleanup.envelope_records(transaction.sender.address,
                                        [(r.address, r.notes.get("dsn", {})) for r in transaction.recipients],
                                        transaction.dsn)
    try:
        queue_id, status, reason = cleanup.inject(cleanup_addresses(self), flags, envelope,
                                                  transaction.message_blocks(), self.timeout)
    except (cleanup.CleanupError, OSError) as exc:
        self.log(LOGERROR, "fail, hand-off to Postfix cleanup: %s: %s" % (type(exc).__name__, exc))
        return DECLINED, "Unable to queue the message now, try again later"
    kind, text = cleanup.verdict(status, reason)
    if kind == "ok":
        self.log(LOGINFO, "pass, queued by Postfix as %s" % queue_id)
        message_id = " ".join((transaction.header.get("Message-Id") or "").split())
        return OK, "Queued! %s(Queue-Id: %s)" % (message_id + " " if message_id else "", queue_id)
    self.log(LOGERROR if kind != "permanent" else LOGINFO,
             "fail, Postfix cleanup refused %s: status %d: %s" % (queue_id, status, reason or text))
    if kind == "permanent":
        return DENY, text
    if kind == "temporary":
        return DENYSOFT, text
    return DECLINED, "Unable to queue the message now, try again later"
