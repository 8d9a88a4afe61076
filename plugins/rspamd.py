"""rspamd: ask rspamd for a verdict on the message and act on it: refuse, defer, mark or rewrite the subject.

qpsmtpd had no rspamd plugin; this one follows rspamd's HTTP protocol and
the actions it defines (as Haraka's rspamd plugin does).

Arguments (as pairs)::

    rspamd [rspamd_socket HOST:PORT|PATH] [headers add|none] [leave_old_headers rename|drop|keep]
           [relayclient scan|skip] [size_limit BYTES] [timeout SECONDS] [defer_on_error 0|1]
           [reject 1|0] [reject_type perm|temp|...] [subject_prefix TEXT] [loglevel N]

``rspamd_socket HOST:PORT|PATH``
    rspamd's normal worker (default ``127.0.0.1:11333``), or its unix socket.
``headers add|none``
    ``add`` (default): every scanned message gets ``X-Spam-Status: Yes|No,
    score=S required=R tests=SYMBOL,...`` and ``X-Spam-Level`` (a star a
    point); ``X-Spam-Flag: YES`` when rspamd says ``add header``, ``rewrite
    subject`` or worse.  ``none``: only the transaction note ``rspamd``
    (rspamd's whole answer).
``leave_old_headers rename|drop|keep``
    What becomes of ``X-Spam-*`` headers the message arrived with:
    ``rename`` (default) to ``X-Old-Spam-*``, ``drop``, or ``keep``.
``relayclient scan|skip``
    ``scan`` (default): relay and authenticated clients are scanned too, and
    rspamd is told the authenticated ``User`` (rspamd applies its outbound
    policy to them).  ``skip``: relay clients and whitelisted hosts or
    senders are not scanned.
``size_limit BYTES``
    Larger messages are not scanned (default 5000000).
``timeout SECONDS``
    The longest the whole exchange may take (default 20, or two thirds of
    ``plugin_timeout`` if that is less; a longer one lengthens the
    hook's bound to match).
``defer_on_error 1``
    When rspamd is down, too slow or answers nonsense, refuse the message
    for now (``452 4.3.0``).  The default (``0``) fails open: log, note
    ``rspamd_error`` in the transaction, and go on unscanned.
``reject 0``
    Never refuse: a ``reject`` or ``soft reject`` verdict is only logged
    (and marked in the headers).  ``reject_type`` shapes the refusal as for
    other plugins.
``subject_prefix TEXT``
    For ``rewrite subject`` when rspamd gives no new subject itself
    (default ``*** SPAM ***``).

rspamd's actions:

* ``reject``: ``552 5.7.1`` with rspamd's SMTP message, or ``spam message
  rejected``;
* ``soft reject``: ``452 4.7.1`` with rspamd's message, or ``try again
  later``;
* ``greylist``: ``452 4.7.1 greylisted, try again later``.  rspamd's own
  greylist module (which needs Redis) remembers the retry and lets it
  through; without it, leave the ``greylist`` action out of rspamd's
  ``actions`` or every such message waits until it expires;
* ``rewrite subject``: the Subject becomes rspamd's ``subject`` (or the
  prefix and the old subject), and the headers are added;
* ``add header``: the headers are added, with ``X-Spam-Flag: YES``;
* ``no action``: the headers are added.

The message is streamed to ``POST /checkv2`` from the spool; the client's
IP, HELO, host name, the envelope sender and each recipient, the queue id
and the authenticated user go as rspamd's request headers.

Config files: none.
"""
from qpgevent import DECLINED, DENYSOFT, LOGERROR, LOGINFO, arguments, rspamd
from qpgevent.scanning import (ScanError, bounded, message_length, scan_timeout, spam_scan_wanted,
                               spam_scanner_arguments)

NOTE = "rspamd"
_SPAM_ACTIONS = ("add header", "rewrite subject", "soft reject", "reject")

ARGUMENTS = {
    "rspamd_socket": arguments.text(default="127.0.0.1:11333"),
    "subject_prefix": arguments.text(default="*** SPAM ***"),
    **spam_scanner_arguments(relayclient="scan", size_limit=5000000),
}


def register(self, qp, *args):
    self.timeout = scan_timeout(self, self.options.timeout)


def hook_data_post(self, transaction):
    options = self.options
    if not spam_scan_wanted(self, transaction):
        return DECLINED
    try:
        with bounded(self.timeout, "rspamd at %s" % options.rspamd_socket):
            verdict = rspamd.check(options.rspamd_socket, transaction.message_blocks(), message_length(transaction),
                                   request_fields(self, transaction), self.timeout)
    except ScanError as exc:
        transaction.notes[NOTE + "_error"] = str(exc)
        if options.defer_on_error:
            self.log(LOGERROR, "error, deferring the message: %s" % exc)
            return DENYSOFT, "Unable to scan for spam now, try again later (#4.3.0)"
        self.log(LOGERROR, "error, message not scanned (failing open): %s" % exc)
        return DECLINED
    transaction.notes[NOTE] = verdict
    if verdict.get("is_skipped"):
        self.log(LOGINFO, "skip, rspamd skipped the message")
        return DECLINED
    return act(self, transaction, verdict)


def request_fields(self, transaction) -> list:
    """rspamd's request headers: who sent what to whom.  Values a header cannot carry are left out."""
    connection, qp = self.qp.connection, self.qp
    fields = [("IP", connection.remote_ip), ("Helo", connection.hello_host), ("Hostname", connection.remote_host),
              ("From", transaction.sender.address if transaction.sender else ""), ("Queue-Id", transaction.id),
              ("User", qp.auth_user), ("MTA-Name", qp.me)]
    fields += [("Rcpt", recipient.address) for recipient in transaction.recipients]
    return [(name, value) for name, value in fields if value and value.isascii() and value.isprintable()]


def act(self, transaction, verdict: dict) -> tuple:
    action = str(verdict.get("action", "no action"))
    score, required = float(verdict.get("score", 0)), float(verdict.get("required_score", 0))
    symbols = sorted(verdict.get("symbols") or {})
    message = str((verdict.get("messages") or {}).get("smtp_message", "")).replace("\r", " ").replace("\n", " ")
    summary = "%s, score %.2f / %.2f, %s" % (action, score, required, ",".join(symbols) or "no symbols")
    if self.options.headers == "add":
        add_headers(transaction, action, score, required, symbols)
    if action == "reject":
        self.adjust_karma(-1)
        return self.get_reject((message or "spam message rejected") + " (#5.7.1)", summary)
    if action in ("soft reject", "greylist"):
        default = "try again later" if action == "soft reject" else "greylisted, try again later"
        return self.get_temp_reject((message or default) + " (#4.7.1)", summary)
    if action == "rewrite subject" and self.options.headers == "add":
        old = transaction.header.get("Subject") or ""
        transaction.header.replace("Subject", verdict.get("subject") or "%s %s" % (self.options.subject_prefix, old))
    self.log(LOGINFO, "%s, %s" % ("fail, tolerated" if action in _SPAM_ACTIONS else "pass", summary))
    return (DECLINED,)


def add_headers(transaction, action: str, score: float, required: float, symbols: list) -> None:
    header = transaction.header
    spam = action in _SPAM_ACTIONS
    fields = [("X-Spam-Flag", "YES")] if spam else []
    fields += [("X-Spam-Status", "%s, score=%.2f required=%.2f tests=%s"
                % ("Yes" if spam else "No", score, required, ",".join(symbols) or "none")),
               ("X-Spam-Level", "*" * min(50, max(0, int(score))))]
    for name, value in reversed(fields):
        header.add(name, value, 0)
