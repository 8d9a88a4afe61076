"""headers: check the message header against RFC 5322 before the message is queued.

Three checks, after the final dot (``data_post``):

* every header named by ``require`` is present and not empty;
* none of the fields RFC 5322 section 3.6 allows only once (Date, From,
  Sender, Reply-To, To, Cc, Bcc, Message-Id, In-Reply-To, References,
  Subject) appears twice;
* with ``future``/``past``, the Date is at most that many days ahead of or
  behind our clock.  A Date that cannot be parsed is not judged (logged as
  ``skip``); a Date without a zone is taken as UTC.

An empty message is refused (``You must send some data first``).  Relay
clients and whitelisted hosts or senders skip the header checks.

Arguments (qpsmtpd's, as pairs)::

    headers [require From,Date,...] [future DAYS] [past DAYS]
            [reject 1|0|naughty] [reject_type perm|temp|disconnect|temp_disconnect] [loglevel N]

For example qpsmtpd's sample line::

    headers reject 0 reject_type temp require From,Date future 2 past 15

``require``: the comma-separated headers a message must have (default
``From``: many legitimate senders omit Date).  ``future``/``past``: days,
fractions allowed; absent or 0, that side is not checked.  ``reject 0``
only logs; ``reject_type temp`` refuses with 452 instead of 552.

Replies (enhanced status 5.6.0, or 4.6.0 with a temporary ``reject_type``)::

    552 5.6.0 We require a valid From header
    552 5.6.0 Only one Subject header allowed. See RFC 5322, Section 3.6
    552 5.6.0 The Date header is too far in the past
    552 5.6.0 The Date header is too far in the future

When several checks fail, a bad Date is reported first, then the first
missing or repeated header; every failure is logged and costs a karma
point.

Differences from qpsmtpd: its reply for a missing or repeated header was
the number of the reject type rather than a reason; it also stored a
deferred rejection for ``naughty`` whatever ``reject`` said, where here
``reject naughty`` does that (as for every plugin).

Config files: none.
"""
import time
from datetime import timezone
from email.utils import parsedate_to_datetime

from qpgevent import DECLINED, LOGINFO, arguments

SINGULAR = ("Date", "From", "Sender", "Reply-To", "To", "Cc", "Bcc",
            "Message-Id", "In-Reply-To", "References", "Subject")
_DAY = 24 * 3600

ARGUMENTS = {
    "require": arguments.words(default="From"),
    "future": arguments.number(minimum=0),
    "past": arguments.number(minimum=0),
}


def hook_data_post(self, transaction):
    if transaction.data_size == 0:
        return self.get_reject("5.6.0 You must send some data first", "no data")
    if self.is_immune():
        return DECLINED
    header = transaction.header
    problems = header_problems(self, header)
    date_problem = check_date(self, header.get("Date"))
    if date_problem:
        problems.insert(0, date_problem)
    if not problems:
        self.log(LOGINFO, "pass")
        return DECLINED
    self.adjust_karma(-len(problems))
    return self.get_reject("5.6.0 " + problems[0], "; ".join(problems))


def header_problems(self, header):
    """What the required and the singular headers get wrong, in that order."""
    problems = ["We require a valid %s header" % name for name in self.options.require
                if not (header.get(name) or "").strip()]
    problems += ["Only one %s header allowed. See RFC 5322, Section 3.6" % name for name in SINGULAR
                 if header.count(name) > 1]
    return problems


def check_date(self, value):
    """The Date's problem with the ``future``/``past`` window, or None."""
    options = self.options
    if value is None or not (options.future or options.past):
        return None
    try:
        date = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        self.log(LOGINFO, "skip, date not parseable (%s)" % value.strip())
        return None
    if date.tzinfo is None:  # no zone, or -0000: UTC, not the server's local time
        date = date.replace(tzinfo=timezone.utc)
    stamp, now = date.timestamp(), time.time()
    if options.past and stamp < now - options.past * _DAY:
        return "The Date header is too far in the past"
    if options.future and stamp > now + options.future * _DAY:
        return "The Date header is too far in the future"
    return None
