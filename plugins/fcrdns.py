"""fcrdns: forward-confirmed reverse DNS of the client, at connect (RFC 8601 ``iprev``).

The client's address is looked up in the reverse DNS (PTR); each name found is
looked up forward (A for an IPv4 client, AAAA for an IPv6 one); the check
passes when one of those addresses is the client's.  Zombie PCs cannot
arrange that; real mail servers have it.

Arguments (qpsmtpd's, as pairs)::

    fcrdns [reject 0|1|naughty] [reject_type temp|perm|disconnect|temp_disconnect] [timeout SECONDS] [loglevel N]

``reject 0`` (default)
    Only record the outcome (notes, karma, Authentication-Results).
``reject 1``
    Refuse a client without confirmed reverse DNS at connect, with
    ``reject_type`` (default ``temp``: ``450 4.7.25``); ``perm`` gives
    ``554 5.7.25`` (RFC 7372: reverse DNS validation failed).
``reject naughty``
    Leave the refusal to the ``naughty`` plugin.
``timeout SECONDS``
    Accepted so that qpsmtpd lines load; the lookups use the one resolver of
    the process, bounded by config ``dns_timeout``.

What it records:

* Authentication-Results (for the whole connection, RFC 8601 2.7.3):
  ``iprev=pass policy.iprev=198.51.100.7 (mail.example.com)``; ``fail`` (PTR
  names whose forward records do not hold the address), ``permerror`` (no PTR
  record) or ``temperror`` (the DNS did not answer in time).
* Connection notes: ``fcrdns`` is that result; ``fcrdns_ptr`` the PTR names;
  ``fcrdns_host`` the name that confirmed the address.
* Karma: +1 on a match, -1 for no PTR record or no match.

A temporary DNS failure is ``temperror`` and, with ``reject 1`` or ``naughty``,
a temporary refusal: never a permanent one.  Relay clients and whitelisted
hosts are not checked; loopback clients (127.0.0.0/8, ::1) pass without a
lookup (+1 karma).

Differences from qpsmtpd: qpsmtpd counts a forward address in the client's /24
as a match; so do we for the policy (no karma loss, no refusal), but the
Authentication-Results say ``iprev=fail`` then, as RFC 8601 section 3 asks for
the address itself.  qpsmtpd writes one ``iprev`` per name it tries and never
refuses whatever ``reject`` says; here there is one ``iprev`` and ``reject``
works.  qpsmtpd tests the host name its server looked up (``remote_host``);
we test the PTR names this plugin finds (one that is no FQDN is not looked
up), look up at most 10 of them, all at once, and only the record type of the
client's address family.  A timeout is ``temperror`` (qpsmtpd: ``fail``).

Config files: none.
"""
import ipaddress

from qpgevent import DECLINED, LOGDEBUG, LOGINFO, arguments
from qpgevent.address import fqdn_fault
from qpgevent.netlist import same_network

MAX_NAMES = 10  # PTR names looked up forward: a bound on the lookups one client can cause
_NO_RDNS = "Your address %s has no reverse DNS (#5.7.25)"
_NO_MATCH = "The reverse DNS of your address %s does not resolve back to it (#5.7.25)"
_TEMPORARY = "Cannot check the reverse DNS of your address %s now, try again later (#4.7.25)"

ARGUMENTS = {"timeout": arguments.number(minimum=0)}


def register(self, qp, *args):
    if self.reject is None:
        self.reject = "0"
    if self.reject_type is None:
        self.reject_type = "temp"


def hook_connect(self, transaction):
    if self.is_immune():
        return DECLINED
    ip = self.qp.connection.remote_ip
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        self.log(LOGINFO, "skip, no client address")
        return DECLINED
    if address.is_loopback:
        self.adjust_karma(1)
        self.log(LOGINFO, "pass, is localhost")
        return DECLINED
    return check(self, str(address), "AAAA" if address.version == 6 else "A")


def check(self, ip, rdtype):
    dns = self.smtpd.dns
    ptr = dns.ptr(ip)
    if ptr.temporary:
        return temporary(self, ip, "reverse lookup %s" % ptr.status.value)
    if not ptr.found:
        self.adjust_karma(-1)
        record(self, "permerror", ip)
        return self.get_reject(_NO_RDNS % ip, "no rDNS for %s (%s)" % (ip, ptr.status.value))
    names = list(dict.fromkeys(name.lower() for name in ptr.records))
    self.qp.connection.notes["fcrdns_ptr"] = names
    candidates = []
    for name in names:
        fault = fqdn_fault(name)
        if fault:
            self.log(LOGINFO, "PTR name %r: %s" % (name, fault))
        else:
            candidates.append(name)
    forward = dns.lookup_many([(name, rdtype) for name in candidates[:MAX_NAMES]])
    near = None
    for name, result in zip(candidates, forward):
        self.log(LOGDEBUG, "%s %s: %s %s" % (name, rdtype, result.status.value, " ".join(result.records)))
        if any(ipaddress.ip_address(found) == ipaddress.ip_address(ip) for found in result.records):
            self.adjust_karma(1)
            self.qp.connection.notes["fcrdns_host"] = name
            record(self, "pass", ip, name)
            self.log(LOGINFO, "pass, %s is %s" % (ip, name))
            return DECLINED
        if near is None and any(same_network(found, ip) for found in result.records):
            near = name
    if near is not None:
        record(self, "fail", ip, near)
        self.log(LOGINFO, "pass, forward network match: %s is near %s" % (near, ip))
        return DECLINED
    if any(result.temporary for result in forward):
        return temporary(self, ip, "forward lookup failed")
    self.adjust_karma(-1)
    record(self, "fail", ip, names[0])
    return self.get_reject(_NO_MATCH % ip, "no PTR name of %s resolves to it (%s)" % (ip, ", ".join(names)))


def temporary(self, ip, why):
    record(self, "temperror", ip)
    return self.get_temp_reject(_TEMPORARY % ip, "%s: %s" % (ip, why))


def record(self, result, ip, name=None):
    """The outcome in the connection note ``fcrdns`` and in the Authentication-Results (RFC 8601 2.7.3)."""
    self.qp.connection.notes["fcrdns"] = result
    # An IPv6 address is no MIME token (':' is a tspecial): it goes quoted.
    value = '"%s"' % ip if ":" in ip else ip
    comment = " (%s)" % name if name and not fqdn_fault(name) else ""
    self.store_auth_results("iprev=%s policy.iprev=%s%s" % (result, value, comment))
