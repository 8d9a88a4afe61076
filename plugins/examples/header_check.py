"""examples/header_check: refuse messages without the headers every message must have.

Arguments::

    examples/header_check [DAYS]

After the final dot the message is refused (``552``) when

* the client sent no data at all,
* there is no ``From`` header,
* there is no ``Date`` header, or it is not a date,
* the ``Date`` is more than ``DAYS`` days in the past (default 7).

RFC 5322 3.6 makes ``From`` and ``Date`` mandatory; a stale date is a
common mark of spam sent from old templates.

Config files: none.
"""
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

from qpgevent import DECLINED, DENY, LOGINFO


def register(self, qp, days="7", *extra):
    if extra or not days.isdigit():
        raise ValueError("takes one optional argument, the largest age of the Date header in days (got %r)"
                         % " ".join((days, *extra)))
    self.max_age = timedelta(days=int(days))


def hook_data_post(self, transaction):
    if transaction.data_size == 0:
        return deny(self, "You must send some data first")
    header = transaction.header
    if not header.get("From"):
        return deny(self, "Mail with no From header not accepted here")
    value = header.get("Date")
    if not value:
        return deny(self, "Mail with no Date header not accepted here")
    try:
        date = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return deny(self, "The Date header is not a date")
    if date.tzinfo is None:  # "-0000": the sender did not know its zone; RFC 5322 says take it as UTC
        date = date.replace(tzinfo=timezone.utc)
    if date < datetime.now(timezone.utc) - self.max_age:
        return deny(self, "The Date in the header is too far in the past")
    return DECLINED


def deny(self, message):
    self.log(LOGINFO, "fail, %s" % message)
    return DENY, message + " (#5.6.0)"
