"""loop: refuse a message that has been through too many hops (a mail loop).

As qmail-smtpd does, the hops are the ``Received`` plus the ``Delivered-To``
fields of the header; at or over the limit the message is refused after
the final dot with::

    554 5.4.6 Too many hops

(RFC 5321 section 6.3: count the Received fields, with a limit of at
least 100; RFC 3463 X.4.6 is "routing loop detected").  The count includes the ``Received`` line we
have just added, as in qpsmtpd.

Arguments::

    loop [MAX]
    loop [max_hops MAX] [loglevel N]

``MAX``: the number of hops at which a message is refused, a whole number
of at least 1 (default 100, qmail's).

Differences from qpsmtpd: it answered ``552`` (its code for any refusal
after DATA) and fell back to 100 on a bad ``MAX``; here the reply is
qmail's ``554``, and a bad ``MAX`` stops the start-up.

Config files: none.
"""
from qpgevent import DECLINED, DONE, LOGINFO, arguments

ARGUMENTS = {"max_hops": arguments.integer(default=100, minimum=1)}
POSITIONAL = ["max_hops"]


def hook_data_post(self, transaction):
    header = transaction.header
    hops = header.count("Received") + header.count("Delivered-To")
    if hops < self.options.max_hops:
        self.log(LOGINFO, "pass, %d hops" % hops)
        return DECLINED
    self.log(LOGINFO, "fail, %d hops (the limit is %d)" % (hops, self.options.max_hops))
    self.qp.respond(554, "Too many hops", status="5.4.6")
    return DONE
