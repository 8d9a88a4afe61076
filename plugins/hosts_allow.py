"""hosts_allow: decide before the greeting whether a client may connect at all.

Arguments::

    hosts_allow [max_conn_ip N]

``max_conn_ip N`` is the most sessions one address may hold at once, this
one included; ``0`` means no limit.  Without it the server's
``-m/--max-from-ip`` value is used, as in qpsmtpd.  A client over the limit
gets ``451 4.7.1 Sorry, too many connections from <ip>, try again later`` and
is disconnected.  (The server refuses with 421 by itself once its own ``-m``
limit is reached, so the argument is useful to set a lower limit than ``-m``
or, with ``-m 0``, to leave the limit to this plugin and its OK rules.)

Config file ``hosts_allow``, one rule a line::

    NETWORK[/PREFIX] CONSTANT [message]

    192.0.2.7        OK
    192.0.2.0/24     DENY Sorry, known spam-only source
    2001:db8::/32    DENYSOFT Too busy for you today
    198.51.100.0/24  DECLINED

``NETWORK`` is an IPv4 or IPv6 address, ``/PREFIX`` a prefix length (a
single address without one).  ``CONSTANT`` is ``OK``, ``DECLINED``, ``DENY``,
``DENYSOFT``, ``DENY_DISCONNECT`` or ``DENYSOFT_DISCONNECT``.  The first rule
that matches the client decides: ``OK`` lets it in and exempts it from the
connection limit, ``DECLINED`` lets it in under the limit (and keeps later
rules from matching it), the DENY family refuses it with ``message`` (or the
server's default text): ``554 5.7.1`` for DENY, ``451 4.7.1`` for DENYSOFT.
The file is read again when it changes, without a restart.

Where this differs from qpsmtpd, on purpose:
  * IPv6 rules work (qpsmtpd compared IPv4 bit masks only).
  * A line that does not parse (bad network, unknown constant, a network
    with host bits set such as ``192.0.2.1/24``) stops the start-up with
    the file and line; qpsmtpd silently treated it as DECLINED or never
    matched it.  A line that goes bad while the server runs is logged and
    skipped.
  * Rules are checked before the connection limit, so ``OK`` hosts (a
    monitoring probe, your own busy relay) are never throttled.
"""
import ipaddress
from functools import lru_cache

from qpgevent import DECLINED, DENY, DENY_DISCONNECT, DENYSOFT, DENYSOFT_DISCONNECT, LOGDEBUG, LOGERROR, LOGINFO, OK

_CONSTANTS = {
    "OK": OK, "DECLINED": DECLINED, "DENY": DENY, "DENYSOFT": DENYSOFT,
    "DENY_DISCONNECT": DENY_DISCONNECT, "DENYSOFT_DISCONNECT": DENYSOFT_DISCONNECT,
}
_FORMAT = "expected 'NETWORK[/PREFIX] CONSTANT [message]' with CONSTANT one of " + ", ".join(_CONSTANTS)


def register(self, qp, *args):
    if len(args) % 2:
        raise ValueError("arguments come in pairs, e.g. 'max_conn_ip 5'")
    options = dict(zip(args[::2], args[1::2]))
    unknown = set(options) - {"max_conn_ip", "loglevel"}
    if unknown:
        raise ValueError("unknown argument %r; the only one is 'max_conn_ip N'" % sorted(unknown)[0])
    self.max_conn_ip = None
    if "max_conn_ip" in options:
        value = options["max_conn_ip"]
        if not value.isdigit():
            raise ValueError("max_conn_ip takes a whole number of 0 or more (0: no limit), not %r" % value)
        self.max_conn_ip = int(value)
    for entry in qp.config.entries("hosts_allow"):
        try:
            parse_rule(entry.value)
        except ValueError as exc:
            raise ValueError("%s:%d: %s" % (entry.path, entry.line, exc)) from None


@lru_cache(maxsize=4096)
def parse_rule(line):
    """``(network, return code, message)`` from one line of ``hosts_allow``; ValueError if it is wrong."""
    words = line.split(None, 2)
    if len(words) < 2:
        raise ValueError("%r: %s" % (line, _FORMAT))
    try:
        network = ipaddress.ip_network(words[0])
    except ValueError as exc:
        try:
            meant = ipaddress.ip_network(words[0], strict=False)
        except ValueError:
            raise ValueError("%r: %s" % (line, exc)) from None
        raise ValueError("%r: %s; did you mean %s?" % (line, exc, meant)) from None
    rc = _CONSTANTS.get(words[1].upper())
    if rc is None:
        raise ValueError("%r: unknown constant %r; %s" % (line, words[1], _FORMAT))
    return network, rc, words[2] if len(words) > 2 else ""


def first_match(self, address):
    for line in self.qp.config_list("hosts_allow"):
        try:
            network, rc, message = parse_rule(line)
        except ValueError as exc:
            self.log(LOGERROR, "skipping a bad hosts_allow line: %s" % exc)
            continue
        if address in network:
            return network, rc, message
    return None


def hook_pre_connection(self, transaction, **args):
    ip = args["remote_ip"]
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        address = None
    rule = first_match(self, address) if address is not None else None
    if rule is not None:
        network, rc, message = rule
        if rc == OK:
            self.log(LOGINFO, "pass, %s matches %s OK" % (ip, network))
            return OK
        if rc != DECLINED:
            self.log(LOGINFO, "fail, %s matches %s: %s" % (ip, network, message or "no message"))
            return rc, message
    limit = self.max_conn_ip if self.max_conn_ip is not None else args.get("max_conn_ip") or 0
    if limit:
        # The server passes a per-address count (O(1)); a plain list of addresses works too.
        count = (args.get("child_addrs") or []).count(ip)
        if count > limit:
            self.log(LOGINFO, "fail, too many connections from %s (%d > %d)" % (ip, count, limit))
            return DENYSOFT, "Sorry, too many connections from %s, try again later" % ip
    self.log(LOGDEBUG, "pass")
    return DECLINED
