"""resolvable_fromhost: the domain of the envelope sender (MAIL FROM) must exist in the DNS as a mail domain.

The domain resolves when one of its MX hosts has an address outside the
networks of config ``invalid_resolvable_fromhost``, or, when it has no MX
record, when it has such an A or AAAA record itself.  MX records that all
point to nothing usable (no address, only invalid addresses, or RFC 7505's
null MX ``.``) make it unresolvable: the address A records are not tried
then, as in qpsmtpd.

Arguments (qpsmtpd's, as pairs)::

    resolvable_fromhost [reject 1|0|naughty] [reject_type temp|perm|disconnect|temp_disconnect] [loglevel N]

``reject 1`` (default)
    Refuse MAIL from a domain that does not resolve, with ``reject_type``
    (default ``temp``: ``450 4.1.8 FQDN required in the envelope sender``;
    ``perm`` gives ``550 5.1.8``).
``reject 0``
    Only log it (and lose karma); qpsmtpd's sample config runs it so.
``reject naughty``
    Store the refusal for the ``naughty`` plugin.

When the DNS does not answer in time, MAIL gets ``450 4.4.3 Temporary address
resolution failure`` (with ``reject 1`` or ``naughty``; whatever
``reject_type`` says, never a permanent refusal), or passes with ``reject 0``.

The null sender ``<>`` is not checked, nor are relay clients and
whitelisted hosts or senders.  An address literal (``user@[192.0.2.7]``,
``[IPv6:...]``) passes unchecked, losing a point of karma.

Transaction notes: ``resolvable_fromhost`` says what was found: ``mx``,
``a`` (an A or AAAA record), ``ip`` (an address literal), ``null`` (the null
sender), ``temperror``, or why the domain failed (``invalid MX for
example.com``, ``no MX, A or AAAA for example.com``).
``resolvable_fromhost_host`` holds the domain.

Config files:
  ``invalid_resolvable_fromhost``  networks whose addresses do not count, one
                      a line: CIDR (``127.0.0.0/8``, ``fe80::/10``), an address,
                      or a prefix (``10.``); qpsmtpd's sample lists loopback,
                      private and link-local networks

Differences from qpsmtpd: it read only IPv4 ``a.b.c.d/n`` lines; IPv6
networks and the other forms of ``relayclients`` work here.  It let a domain
whose only A record was in an invalid network pass; here it fails.  It
checked only the first address of an MX host; here any valid one will do.
With ``reject naughty`` it refused at once; here the naughty plugin does.
"""
from qpgevent import DECLINED, LOGINFO, LOGWARN
from qpgevent.address import address_literal
from qpgevent.netlist import ip_in

NOTE = "resolvable_fromhost"
_REFUSAL = "FQDN required in the envelope sender (#5.1.8)"
_TEMPORARY = "Temporary address resolution failure (#4.4.3)"


def register(self, qp, *args):
    if self.reject is None:
        self.reject = "1"
    if self.reject_type is None:
        self.reject_type = "temp"


def hook_mail(self, transaction, sender, **params):
    if self.is_immune():
        return DECLINED
    notes = transaction.notes
    if sender.host is None:
        notes[NOTE] = "null"
        self.log(LOGINFO, "pass, null sender")
        return DECLINED
    host = sender.host.rstrip(".")
    notes[NOTE + "_host"] = host
    if address_literal(host) is not None:
        notes[NOTE] = "ip"
        self.adjust_karma(-1)
        self.log(LOGINFO, "skip, %s is an IP" % host)
        return DECLINED
    result, detail = resolve(self, host)
    notes[NOTE] = result if result in ("mx", "a", "temperror") else detail
    if result in ("mx", "a"):
        self.log(LOGINFO, "pass, %s" % detail)
        return DECLINED
    if result == "temperror":
        return self.get_temp_reject(_TEMPORARY, detail)
    self.adjust_karma(-1)
    return self.get_reject(_REFUSAL, detail)


def resolve(self, host):
    """(``mx``, ``a``, ``temperror`` or ``fail``; what was found, for the log and the note)."""
    dns = self.smtpd.dns
    invalid = self.qp.config_list("invalid_resolvable_fromhost")
    mx = dns.mx(host)
    if mx.found:
        exchanges = [exchange for _, exchange in mx.records]
        results = dns.lookup_many([(name, rdtype) for name in exchanges if name not in ("", ".")
                                   for rdtype in ("A", "AAAA")])
        for result in results:
            if valid_addresses(result.records, invalid):
                return "mx", "%s has MX at %s" % (host, result.name)
        if any(result.temporary for result in results):
            return "temperror", "no MX host of %s resolved: DNS failure" % host
        return "fail", "invalid MX for %s" % host
    addresses = dns.lookup_many([(host, "A"), (host, "AAAA")])
    for result in addresses:
        if valid_addresses(result.records, invalid):
            return "a", "%s has %s records" % (host, result.rdtype)
    if mx.temporary or any(result.temporary for result in addresses):
        self.log(LOGWARN, "DNS failure for %s: MX %s, A %s, AAAA %s"
                 % (host, mx.status.value, addresses[0].status.value, addresses[1].status.value))
        return "temperror", "DNS failure for %s" % host
    found = [address for result in addresses for address in result.records]
    if found:
        return "fail", "%s has only invalid addresses (%s)" % (host, ", ".join(found))
    return "fail", "no MX, A or AAAA for %s" % host


def valid_addresses(addresses, invalid):
    return [address for address in addresses if not ip_in(address, invalid)]
