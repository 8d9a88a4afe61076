"""relay: decide at connect time whether the client may relay (send to any domain).

Arguments::

    relay [only 1]

``only 1`` also refuses every recipient of a client that may not relay
(``550 5.7.1 Relaying denied``), for a submission-only listener.

Config files:
  ``relayclients``    addresses allowed to relay, one a line: an IP (``192.0.2.7``,
                      ``2001:db8::7``), a network in CIDR form (``192.0.2.0/24``,
                      ``2001:db8::/32``) or a qmail-style prefix of whole octets
                      ending in a dot (``192.168.``) or of whole IPv6 groups ending
                      in a colon (``fdda:b13d:``); text after the first word is a
                      comment, an entry of none of these forms is ignored
  ``norelayclients``  the same forms; a match here wins over ``relayclients``

A ``RELAYCLIENT`` variable in the session environment (tcpserver's rules
file) also grants relaying.  The result is ``connection.relay_client``, which
``rcpt_ok`` and other plugins read.
"""
import ipaddress
from functools import lru_cache

from qpgevent import DECLINED, DENY, LOGINFO

_ONLY = "only"


def register(self, qp, *args):
    if len(args) % 2:
        raise ValueError("arguments come in pairs, e.g. 'only 1'")
    options = dict(zip(args[::2], args[1::2]))
    unknown = set(options) - {_ONLY, "loglevel"}
    if unknown:
        raise ValueError("unknown argument %r; the only one is 'only 1'" % sorted(unknown)[0])
    if options.get(_ONLY, "0") not in ("0", "1"):
        raise ValueError("'only' takes 0 or 1")
    if options.get(_ONLY) == "1":
        self.register_hook("rcpt", "refuse_non_relay")


def matches(ip, entries):
    """True when ``ip`` is one of ``entries`` (IPs, CIDR networks, or dotted prefixes)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    for entry in entries:
        network = entry_network(entry.split()[0])
        if network is not None and address in network:
            return True
    return False


@lru_cache(maxsize=4096)
def entry_network(entry):
    """The network an entry stands for; a prefix ``10.1.`` or ``fdda:b13d:`` is a /16 or a /32.

    Prefixes become networks rather than string prefixes so that an IPv6
    client matches however its address happens to be written (``::``
    compression, upper case).  An entry that is none of the forms is None.
    """
    try:
        if entry.endswith(".") and "/" not in entry:
            octets = entry[:-1].split(".")
            return ipaddress.ip_network("%s/%d" % (".".join(octets + ["0"] * (4 - len(octets))), 8 * len(octets)))
        if entry.endswith(":") and "/" not in entry and "::" not in entry:
            groups = entry[:-1].split(":")
            return ipaddress.ip_network("%s::/%d" % (":".join(groups), 16 * len(groups)))
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return None


def hook_connect(self, transaction):
    connection = self.qp.connection
    ip = connection.remote_ip
    if matches(ip, self.qp.config_list("norelayclients")):
        self.log(LOGINFO, "skip, %s is in norelayclients" % ip)
        return DECLINED
    if "RELAYCLIENT" in self.qp.env:
        connection.relay_client = True
        self.log(LOGINFO, "pass, RELAYCLIENT is set")
    elif matches(ip, self.qp.config_list("relayclients")):
        connection.relay_client = True
        self.log(LOGINFO, "pass, %s is in relayclients" % ip)
    return DECLINED


def refuse_non_relay(self, transaction, recipient, **params):
    if self.qp.connection.relay_client:
        return DECLINED
    return DENY, "Relaying denied (#5.7.1)"
