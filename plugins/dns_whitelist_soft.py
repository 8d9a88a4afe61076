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
from qpgevent import DECLINED, LOGINFO, LOGNOTICE
from qpgevent.dnslist import Zone, check, parse_zones, reversed_ip


def hook_connect(self, transaction):
    ip = self.qp.connection.remote_ip
    # The zone lines' extra words are no reply texts here: ask A and TXT of every zone.
    zones = [Zone(zone.name) for zone in parse_zones(self.qp.config_list("whitelist_zones"))]
    if not zones:
        self.log(LOGINFO, "skip, no zones in whitelist_zones")
        return DECLINED
    try:
        key = reversed_ip(ip)
    except ValueError:
        self.log(LOGINFO, "skip, %r is not an IP address" % ip)
        return DECLINED
    listings = check(self, key, zones)
    if not listings:
        self.log(LOGINFO, "pass, %s is in none of %d zones" % (ip, len(zones)))
        return DECLINED
    first = listings[0]
    reason = first.reason or "listed in %s" % first.zone.name
    self.qp.connection.notes["whitelisthost"] = reason
    self.log(LOGNOTICE, "pass, host %s is whitelisted by %s: %s" % (ip, first.zone.name, reason))
    return DECLINED
