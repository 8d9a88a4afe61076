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
from qpgevent import DECLINED, DENY, LOGINFO
from qpgevent.netlist import ip_in

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


def hook_connect(self, transaction):
    connection = self.qp.connection
    ip = connection.remote_ip
    if ip_in(ip, self.qp.config_list("norelayclients")):
        self.log(LOGINFO, "skip, %s is in norelayclients" % ip)
        return DECLINED
    if "RELAYCLIENT" in self.qp.env:
        connection.relay_client = True
        self.log(LOGINFO, "pass, RELAYCLIENT is set")
    elif ip_in(ip, self.qp.config_list("relayclients")):
        connection.relay_client = True
        self.log(LOGINFO, "pass, %s is in relayclients" % ip)
    return DECLINED


def refuse_non_relay(self, transaction, recipient, **params):
    if self.qp.connection.relay_client:
        return DECLINED
    return DENY, "Relaying denied (#5.7.1)"
