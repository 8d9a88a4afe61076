"""rhsbl: refuse senders whose domain a right-hand-side blocklist lists.

At MAIL the domain of the sender's address is looked up as
``<domain>.<zone>`` in every zone of ``rhsbl_zones`` at once.  A listed
domain gets ``550 5.7.1 Mail from <domain> rejected because it <reason>``.
The null sender (bounces) and senders with an address literal are not
checked; nor are relay clients and whitelisted hosts or senders
(``is_immune``).

Arguments::

    rhsbl [disconnect] [reject 1|0|naughty] [reject_type perm|temp|disconnect|temp_disconnect] [loglevel N]

``reject 1`` (default) refuses the MAIL command; ``reject 0`` only logs;
``reject naughty`` leaves the refusal to the ``naughty`` plugin.  A lone
``disconnect`` is qpsmtpd's old spelling of ``reject_type disconnect``.

Config files:
  ``rhsbl_zones``  one list a line: ``zone``, whose TXT record is the reason,
                   or ``zone message`` (after white space) with your own
                   reason, for lists that publish no TXT, e.g.
                   ``dsn.rfc-ignorant.org does not accept bounces``.  A zone
                   that times out or answers SERVFAIL is logged and taken as
                   not listing the domain.

The transaction note ``rhsbl`` holds the reason of a listed sender.

Differences from qpsmtpd: qpsmtpd checks only the sender's domain too (its
HELO lookup has been commented out since 2012), but its reply then names
the HELO host for TXT listings and the query name instead of the zone
line's message for A listings; here the reply always names the sender's
domain and gives the message or TXT.  A zone without a message is asked for
A, and for TXT once that lists the domain (qpsmtpd asks only TXT).  Zones are asked in parallel.
"""
from qpgevent import DECLINED, LOGINFO, arguments
from qpgevent.address import domain_key
from qpgevent.dnslist import listings

ARGUMENTS = {
    "denial": arguments.choice("disconnect", "perm"),
}
POSITIONAL = ["denial"]  # qpsmtpd's one-word form, ``rhsbl disconnect``


def register(self, qp, *args):
    if self.options.denial == "disconnect" and self.reject_type is None:
        self.reject_type = "disconnect"


def hook_mail(self, transaction, sender, **params):
    if self.is_immune():
        return DECLINED
    host = sender.host if sender is not None else None
    if not host:
        self.log(LOGINFO, "pass, null sender")
        return DECLINED
    if host.startswith("["):
        self.log(LOGINFO, "skip, %s is an address literal" % host)
        return DECLINED
    domain = domain_key(host)
    found = listings(self, "rhsbl_zones", domain, domain=True)
    if not found:
        return DECLINED
    first = found[0]
    reason = first.reason or "is listed in %s" % first.zone.name
    transaction.notes["rhsbl"] = reason
    return self.get_reject("Mail from %s rejected because it %s" % (domain, reason),
                           "%s is listed in %s" % (domain, first.zone.name))
