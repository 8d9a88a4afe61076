"""helo: check the name the client gives in HELO or EHLO, and record it in an ``X-HELO`` header.

Arguments (qpsmtpd's, as pairs)::

    helo [policy lenient|rfc|strict] [reject 1|0|naughty] [reject_type disconnect|perm|temp|temp_disconnect]
         [timeout SECONDS] [dns_timeout SECONDS] [loglevel N]

``policy`` picks the tests, run in this order; the first that fails decides:

``lenient`` (default)
    ``is_in_badhelo`` (the name is in config ``badhelo``), ``invalid_localhost``
    (``localhost`` from a client that is not on the loopback),
    ``is_forged_literal`` (an address literal ``[192.0.2.7]`` or
    ``[IPv6:2001:db8::7]`` that is not the client's address), ``is_plain_ip``
    (a bare address, ``192.0.2.7``: neither a name nor a literal).
``rfc``
    Those, then ``is_not_fqdn`` (no dot, or characters other than letters,
    digits, ``-`` and ``.``; literals pass), ``no_forward_dns`` (the name has
    neither A nor AAAA record; literals pass), ``no_reverse_dns`` (the client's
    address has no PTR record).
``strict``
    Those, then ``is_address_literal`` (any address literal) and
    ``no_matching_dns``: neither does the name resolve to the client's address
    (or an address in its /24, IPv6 /96), nor does a PTR name of the client's
    address equal the name (or end in the same two labels).  RFC 5321 4.1.4
    forbids refusing mail for that alone: use ``strict`` with ``reject 0``
    or ``naughty``, as qpsmtpd's sample config does.

``reject 1`` (default)
    Refuse the HELO/EHLO command itself, as qpsmtpd does, with
    ``reject_type`` (default ``disconnect``: ``550 5.7.1 <reason>`` and the
    connection closes; ``perm`` keeps it open for another try, ``temp`` gives
    ``450 4.7.1``).
``reject 0``
    Only log the failure (and lose karma).
``reject naughty``
    Store the refusal for the ``naughty`` plugin, which gives it later (at
    MAIL, RCPT or DATA, as configured there), after a chance to authenticate.
``timeout``, ``dns_timeout``
    Accepted so that qpsmtpd lines load; lookups use the process's one
    resolver, bounded by config ``dns_timeout``.

Each failure costs one point of karma; a name that matches both forward and
reverse (strict) gains one.  The connection notes ``helo_forward_match`` and
``helo_reverse_match`` record what ``no_forward_dns`` and ``no_reverse_dns``
found.  Relay clients and whitelisted hosts are not checked.  Every message
gets ``X-HELO: <name>`` as its first header (an ``X-HELO`` the client sent is
removed).

DNS that does not answer in time: ``no_forward_dns`` lets the name pass (as
qpsmtpd does), and ``no_reverse_dns`` and ``no_matching_dns`` (when the
lookup they depend on did not finish) refuse only temporarily (``4.7.1``,
hanging up with the ``disconnect`` reject types), or not at all with
``reject 0``: never a permanent refusal.

Config files:
  ``badhelo``  names refused at HELO, one a line, compared without regard to case
               (``aol.com``).  A line with one of ``{}[]()^$|*+?\\!`` is a regular
               expression (Python syntax, qpsmtpd's were Perl's) searched in the
               lower-cased name: ``^(mail|smtp)\\.example\\.net$``.  A leading
               ``!`` negates it: ``!\\.`` refuses every name without a dot.
               A pattern that does not compile is logged and skipped.

Differences from qpsmtpd: qpsmtpd overrides any ``reject_type`` with
``disconnect``; here ``disconnect`` is only the default.  Its
``is_forged_literal`` never fired (it tested the bracketed text as a bare
address); here it does, and IPv6 literals are understood everywhere.  Its
``no_forward_dns`` asked for A records only, and a name with records of
another kind passed; here a name needs an A or AAAA record.  A bare address
with ``255`` in it counted as no address there; here every valid address
does.  A DNS failure in ``no_reverse_dns`` was a permanent refusal there.
"""
import ipaddress
import re
from functools import lru_cache

from qpgevent import DECLINED, LOGDEBUG, LOGERROR, LOGINFO, LOGNOTICE, arguments
from qpgevent.address import address_literal, fqdn_fault
from qpgevent.dns import Status
from qpgevent.netlist import same_network

POLICIES = {
    "lenient": ("is_in_badhelo", "invalid_localhost", "is_forged_literal", "is_plain_ip"),
    "rfc": ("is_not_fqdn", "no_forward_dns", "no_reverse_dns"),
    "strict": ("is_address_literal", "no_matching_dns"),
}
_REGEX_CHARACTERS = re.compile(r"[{}\[\]()^$|*+?\\!]")
_TEMPORARY_NOTE = "helo_dns_temporary"

ARGUMENTS = {
    "policy": arguments.choice(*POLICIES, default="lenient"),
    "timeout": arguments.number(minimum=0),
    "dns_timeout": arguments.number(minimum=0),
}


class Failure(Exception):
    """A failed test: what the client is told, what the log says, and whether the DNS may answer otherwise later."""

    def __init__(self, message, log, temporary=False):
        super().__init__(message)
        self.message, self.log, self.temporary = message, log, temporary


def register(self, qp, *args):
    if self.reject is None:
        self.reject = "1"
    if self.reject_type is None:
        self.reject_type = "disconnect"
    names = []
    for policy in POLICIES:  # each policy adds its tests to the previous one's
        names.extend(POLICIES[policy])
        if policy == self.options.policy:
            break
    self.tests = [globals()[name] for name in names]


def hook_helo(self, transaction, host, *extra):
    return check(self, host)


def hook_ehlo(self, transaction, host, *extra):
    return check(self, host)


def hook_data_post(self, transaction):
    host = self.qp.connection.hello_host
    transaction.header.delete("X-HELO")
    if host:
        transaction.header.add("X-HELO", host, 0)
    return DECLINED


def check(self, host):
    if self.is_immune():
        return DECLINED
    notes = self.qp.connection.notes
    for note in ("helo_forward_match", "helo_reverse_match", _TEMPORARY_NOTE):
        notes.pop(note, None)  # a second EHLO (after STARTTLS) is checked afresh
    for test in self.tests:
        try:
            test(self, host)
        except Failure as failure:
            self.adjust_karma(-1)
            log = "%s: %s" % (test.__name__, failure.log)
            if failure.temporary:
                return self.get_temp_reject(failure.message, log)
            return self.get_reject(failure.message, log)
    self.log(LOGINFO, "pass, %s" % host)
    return DECLINED


# -- the tests: each returns when the name passes and raises Failure when it does not ---------------

def is_in_badhelo(self, host):
    name = host.lower()
    for entry in self.qp.config_list("badhelo"):
        if _REGEX_CHARACTERS.search(entry):
            if regex_matches(self, entry, name):
                raise Failure("Your HELO hostname is not allowed", "badhelo pattern match (%s)" % entry)
        elif name == entry.lower():
            raise Failure("I do not believe you are %s." % host, "in badhelo")


def regex_matches(self, entry, name):
    """Whether ``name`` is refused by pattern ``entry`` (a leading ``!`` refuses what does not match)."""
    negated = entry.startswith("!")
    pattern = compiled(entry[1:] if negated else entry)
    if pattern is None:
        self.log(LOGERROR, "badhelo: %r is no valid regular expression; skipped" % entry)
        return False
    return (pattern.search(name) is None) == negated


@lru_cache(maxsize=256)
def compiled(pattern):
    try:
        return re.compile(pattern)
    except re.error:
        return None


def invalid_localhost(self, host):
    if host.lower() == "localhost" and not is_loopback(self.qp.connection.remote_ip):
        raise Failure("You are not localhost", "invalid localhost")


def is_forged_literal(self, host):
    literal = address_literal(host)
    if literal is not None and not same_address(literal, self.qp.connection.remote_ip):
        raise Failure("Forged IPs not accepted here", "forged IP literal %s" % host)


def is_plain_ip(self, host):
    if is_address(host):
        raise Failure("Plain IP is invalid HELO hostname (RFC 5321)", "plain IP")


def is_not_fqdn(self, host):
    if address_literal(host) is not None:
        return
    fault = fqdn_fault(host)
    if fault == "not FQDN":
        raise Failure("HELO name is not fully qualified. Read RFC 5321", fault)
    if fault:
        raise Failure("HELO name contains invalid FQDN characters. Read RFC 1035", fault)


def is_address_literal(self, host):
    if address_literal(host) is not None:
        raise Failure("RFC 5321 allows an address literal, but we do not", "bracketed IP")


def no_forward_dns(self, host):
    if address_literal(host) is not None:
        return
    results = self.smtpd.dns.lookup_many([(host, "A"), (host, "AAAA")])
    addresses = [address for result in results for address in result.records]
    if addresses:
        remote_ip = self.qp.connection.remote_ip
        if any(same_address(address, remote_ip) or same_network(address, remote_ip) for address in addresses):
            self.log(LOGDEBUG, "forward match: %s" % host)
            self.qp.connection.notes["helo_forward_match"] = True
        return
    if any(result.temporary for result in results):
        self.qp.connection.notes[_TEMPORARY_NOTE] = True
        self.log(LOGERROR, "skip, forward lookup of %s failed (%s)"
                 % (host, "/".join(result.status.value for result in results)))
        return
    if any(result.status is Status.NXDOMAIN for result in results):
        raise Failure("HELO hostname does not exist", "no such host")
    raise Failure("HELO hostname did not resolve", "no forward DNS")


def no_reverse_dns(self, host):
    ip = self.qp.connection.remote_ip
    result = self.smtpd.dns.ptr(ip)
    if result.temporary:
        self.qp.connection.notes[_TEMPORARY_NOTE] = True
        raise Failure("error getting reverse DNS for %s" % ip, "rDNS %s" % result.status.value, temporary=True)
    if result.status is Status.NXDOMAIN:
        raise Failure("no rDNS for %s" % ip, "no rDNS")
    if not result.found:
        raise Failure("no reverse DNS for %s" % ip, "no rDNS")
    name = host.lower().rstrip(".")
    for ptr in result.records:
        ptr = ptr.lower()
        if ptr == name or (fqdn_fault(ptr) is None and ptr.split(".")[-2:] == name.split(".")[-2:]):
            if ptr != name:
                self.log(LOGNOTICE, "reverse domain match: %s" % ptr)
            self.qp.connection.notes["helo_reverse_match"] = True


def no_matching_dns(self, host):
    notes = self.qp.connection.notes
    forward, reverse = notes.get("helo_forward_match"), notes.get("helo_reverse_match")
    if forward and reverse:
        self.adjust_karma(1)  # a perfect match
    if forward or reverse:
        return
    if notes.get(_TEMPORARY_NOTE):
        raise Failure("Cannot check your HELO hostname now, try again later", "DNS lookup failed", temporary=True)
    raise Failure("That HELO hostname fails FCrDNS", "no matching DNS")


# -- addresses -------------------------------------------------------------------------------------

def is_address(text):
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def same_address(first, second):
    return is_address(first) and is_address(second) and ipaddress.ip_address(first) == ipaddress.ip_address(second)


def is_loopback(ip):
    return is_address(ip) and ipaddress.ip_address(ip).is_loopback
