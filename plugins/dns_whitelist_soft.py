"""dns_whitelist_soft: mark clients a DNS whitelist lists, so that later plugins spare them.

At connect the client's address is looked up (``7.2.0.192.<zone>``, IPv6
by nibbles) in every zone of ``whitelist_zones`` at once.  A listed client
gets the connection note ``whitelisthost`` (the list's TXT record, or
``listed in <zone>``), which ``is_immune()`` reads: dnsbl, rhsbl, uribl and
the other filters then skip it.  List this plugin before them.

Arguments: only the generic ``loglevel``.

Config files:
  ``whitelist_zones``  one zone a line (text after the zone is ignored).  A
                       zone that times out or answers SERVFAIL is logged and
                       taken as not listing the client.

Differences from qpsmtpd: the note is set at connect (qpsmtpd sent the
queries at connect but set the note at the first RCPT, too late for the
connect and MAIL checks of other plugins); IPv6 clients are looked up; an A
answer alone counts, as qpsmtpd's documentation says, though its code only
asked TXT.
"""
from qpgevent import DECLINED, LOGNOTICE
from qpgevent.dnslist import listings


def hook_connect(self, transaction):
    ip = self.qp.connection.remote_ip
    found = listings(self, "whitelist_zones", ip, reasons_from_dns=True)
    if not found:
        return DECLINED
    first = found[0]
    reason = first.reason or "listed in %s" % first.zone.name
    self.qp.connection.notes["whitelisthost"] = reason
    self.log(LOGNOTICE, "pass, host %s is whitelisted by %s: %s" % (ip, first.zone.name, reason))
    return DECLINED
