"""spamassassin: ask SpamAssassin's spamd whether the message is spam; add its X-Spam-* headers, refuse over a score.

Arguments (qpsmtpd's, as pairs)::

    spamassassin [reject N|userprefs] [reject_type perm|temp|...] [munge_subject_threshold N]
                 [subject_prefix TEXT] [spamd_socket PATH|HOST:PORT] [spamd_user NAME]
                 [headers none] [leave_old_headers rename|drop|keep] [relayclient skip|scan]
                 [size_limit BYTES] [timeout SECONDS] [defer_on_error 0|1] [loglevel N]

``reject N``
    Refuse a message scoring ``N`` or more (``552 5.7.1 spam score exceeded
    threshold``; ``reject_type temp`` makes it a 452).  ``reject userprefs``
    takes the threshold spamd used (its ``required_score``, per user with
    ``spamd_user vpopmail``).  Default: never refuse, only add headers.
    ``reject_threshold N`` is the old spelling.  qpsmtpd's config.sample has
    ``spamassassin reject 12``.
``munge_subject_threshold N``
    Prefix the Subject of a message scoring over ``N`` (and over spamd's own
    threshold) with ``subject_prefix`` (default the ``subject_prefix`` config
    file, else ``*** SPAM ***``).
``spamd_socket PATH|HOST:PORT``
    Where spamd listens: a unix socket path (it has a ``/``) or ``HOST:PORT``
    (``[v6]:PORT`` for IPv6); default ``127.0.0.1:783``.
``spamd_user NAME``
    The ``User`` spamd scores for (default the user qpgevent runs as).
    ``vpopmail`` means per-recipient preferences: a message with one
    recipient is scored as that address.  A message with several gets an
    ``X-Spam-User: NAME, N recipients`` header, as in qpsmtpd.
``headers none``
    Add no headers and leave the Subject alone; the verdict is only in the
    transaction note ``spamassassin``.
``leave_old_headers rename|drop|keep``
    What becomes of ``X-Spam-*`` headers the message arrived with (another
    host's verdict, or a forged one): ``rename`` (default) to
    ``X-Old-Spam-*``, ``drop``, or ``keep``.  Done before the scan.
``relayclient skip|scan``
    Relay clients and whitelisted hosts or senders are not scanned (``skip``,
    the default, as qpsmtpd); ``scan`` scans them too.
``size_limit BYTES``
    Larger messages are not scanned (default 500000).
``timeout SECONDS``
    The longest the whole exchange with spamd may take (default 20, or two
    thirds of ``plugin_timeout`` if that is less; a longer one lengthens the
    hook's bound to match).
``defer_on_error 1``
    When spamd is down, too slow or answers nonsense, refuse the message for
    now (``452 4.3.0``) so the client retries.  The default (``0``) is to
    fail open: the error is logged, the transaction note
    ``spamassassin_error`` says why, and the message goes on unscanned.

The message is streamed to spamd from the spool (``HEADERS`` command of the
SPAMC/1.5 protocol, preceded by ``X-Envelope-From``), and spamd's
``X-Spam-*`` fields (Status, Flag, Level, Checker-Version, Report, ... as
its ``add_header`` settings say) are added at the top of the message.  The
decision uses the score and threshold of spamd's ``Spam:`` answer line.  The
note ``spamassassin`` holds ``is_spam`` ("Yes"/"No"), ``score``,
``required`` and the other ``key=value`` items of X-Spam-Status (``tests``,
``autolearn``, ``version``).  A spam verdict costs a point of karma;
autolearn=ham gives one back.

Differences from qpsmtpd: ``X-Spam-Report`` is kept (qpsmtpd dropped it
because its header class mangled the folding); old ``X-Spam-*`` headers are
dealt with before the scan and whatever their names; when spamd's config
adds no X-Spam-Status (``clear_headers``), a short one (``Yes, score=20.0
required=5.0``) is added so the verdict stays visible; a spamd failure can be
made a temporary refusal (``defer_on_error``); every wait is bounded.

Config files: ``subject_prefix`` (optional, see above).
"""
import itertools
import os
import pwd

from qpgevent import DECLINED, DENYSOFT, LOGERROR, LOGINFO, arguments, spamd
from qpgevent.scanning import (ScanError, bounded, message_length, scan_timeout, spam_scan_wanted,
                               spam_scanner_arguments)

NOTE = "spamassassin"
_DEFAULT_PREFIX = "*** SPAM ***"


def _threshold(text: str):
    """``reject``'s value: a score, or ``userprefs`` (spamd's own threshold)."""
    return text if text == "userprefs" else float(text)


ARGUMENTS = {
    "reject": arguments.Argument(_threshold, "a score or userprefs"),
    "reject_threshold": arguments.Argument(_threshold, "a score or userprefs"),
    "munge_subject_threshold": arguments.number(),
    "subject_prefix": arguments.text(),
    "spamd_socket": arguments.text(default="127.0.0.1:783"),
    "spamd_user": arguments.text(),
    **spam_scanner_arguments(relayclient="skip", size_limit=500000),
}


def register(self, qp, *args):
    options = self.options
    self.threshold = options.reject if options.reject is not None else options.reject_threshold
    self.timeout = scan_timeout(self, options.timeout)
    self.spamd_user = options.spamd_user or pwd.getpwuid(os.geteuid()).pw_name


def hook_data_post(self, transaction):
    options = self.options
    if not spam_scan_wanted(self, transaction):
        return DECLINED
    user = spamd_username(self, transaction)
    envelope = ("X-Envelope-From: %s\n" % transaction.sender).encode("utf-8", "surrogateescape")
    try:
        with bounded(self.timeout, "spamd at %s" % options.spamd_socket):
            length = len(envelope) + message_length(transaction)
            message = itertools.chain((envelope,), transaction.message_blocks())
            verdict = spamd.request(options.spamd_socket, "HEADERS", message, length, user, self.timeout)
    except ScanError as exc:
        return scan_failed(self, transaction, str(exc))
    spam_headers = [(name, value) for name, value in verdict.spam_headers() if name.lower() != "x-spam-prev-subject"]
    results = read_results(verdict, spam_headers)
    transaction.notes[NOTE] = results
    if options.headers != "none":
        add_headers(self, transaction, spam_headers, verdict, user)
        munge_subject(self, transaction, verdict)
    return decide(self, verdict, results)


def spamd_username(self, transaction) -> str:
    """The ``User`` to score for: the recipient for ``spamd_user vpopmail`` and one recipient, else spamd_user."""
    if self.spamd_user == "vpopmail" and len(transaction.recipients) == 1:
        return transaction.recipients[0].address
    return self.spamd_user


def read_results(verdict, spam_headers) -> dict:
    """The note: spamd's verdict, with the ``key=value`` items of its X-Spam-Status when it sent one."""
    results = {}
    status = next((value for name, value in spam_headers if name.lower() == "x-spam-status"), None)
    if status:
        for item in status.split()[1:]:
            key, _, value = item.partition("=")
            results[key] = value
    results.update(is_spam="Yes" if verdict.spam else "No", score=verdict.score, required=verdict.threshold)
    return results


def add_headers(self, transaction, spam_headers, verdict, user) -> None:
    header = transaction.header
    recipients = len(transaction.recipients)
    if not any(name.lower() == "x-spam-status" for name, _ in spam_headers):
        spam_headers = [("X-Spam-Status", "%s, score=%.1f required=%.1f"
                         % ("Yes" if verdict.spam else "No", verdict.score, verdict.threshold))] + spam_headers
    if recipients > 1:
        # Per-user preferences could not be used: say for whom it was scored, as qpsmtpd does.
        spam_headers = [("X-Spam-User", "%s, %d recipients" % (user, recipients))] + spam_headers
    for name, value in reversed(spam_headers):
        header.add(name, value, 0)


def munge_subject(self, transaction, verdict) -> None:
    limit = self.options.munge_subject_threshold
    if limit is None or verdict.score <= limit or verdict.score <= verdict.threshold:
        return
    prefix = self.options.subject_prefix or self.qp.config("subject_prefix") or _DEFAULT_PREFIX
    transaction.header.replace("Subject", "%s %s" % (prefix, transaction.header.get("Subject") or ""))


def decide(self, verdict, results) -> tuple:
    status = "%s, %.1f" % ("Spam" if verdict.spam else "Ham", verdict.score)
    if verdict.spam:
        self.adjust_karma(-1)
    learn = results.get("autolearn", "")
    if learn in ("ham", "spam"):
        self.adjust_karma(1 if learn == "ham" else -1)
    threshold = verdict.threshold if self.threshold == "userprefs" else self.threshold
    if not threshold:
        self.log(LOGINFO, "%s, %s, reject disabled" % ("fail" if verdict.spam else "pass", status))
        return (DECLINED,)
    if verdict.score < threshold:
        self.log(LOGINFO, "%s, %s < %s" % ("fail, tolerated" if verdict.spam else "pass", status, threshold))
        return (DECLINED,)
    return self.get_reject("spam score exceeded threshold (#5.7.1)", "%s >= %s" % (status, threshold))


def scan_failed(self, transaction, reason: str) -> tuple:
    """spamd gave no verdict: fail open (log, note, go on) or, with ``defer_on_error 1``, refuse for now."""
    transaction.notes[NOTE + "_error"] = reason
    if self.options.defer_on_error:
        self.log(LOGERROR, "error, deferring the message: %s" % reason)
        return DENYSOFT, "Unable to scan for spam now, try again later (#4.3.0)"
    self.log(LOGERROR, "error, message not scanned (failing open): %s" % reason)
    return (DECLINED,)
