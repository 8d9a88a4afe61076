"""relay: decide at connect time whether the client may relay (send to any domain).

Arguments::

    relay [only 1]

``only 1`` answers every RCPT itself, as qpsmtpd does: a client that may
relay has each recipient accepted at once (later rcpt plugins are not asked:
list ``relay`` before them), any other gets ``550 5.7.1 relaying denied``.
For a submission-only listener.

Config files:
  ``relayclients``    addresses allowed to relay, one a line: an IP (``192.0.2.7``,
                      ``2001:db8::7``), a network in CIDR form (``192.0.2.0/24``,
                      ``2001:db8::/32``) or a qmail-style prefix of whole octets
                      ending in a dot (``192.168.``), of whole IPv6 groups ending
                      in a colon (``fdda:b13d:``) or, as in qpsmtpd, ending on any
                      hex digit (``2001:0DB8``, ``2001:0db``: leading zeros count);
                      text after the first word is a comment, an entry of none of
                      these forms is ignored
  ``morerelayclients.cdb``  qpsmtpd's long list (a cdb, looked up, not scanned):
                      keys are IPs and the prefixes qpsmtpd strips them to
                      (``192.168.``, ``2001:0db8``); without a cdb a plain
                      ``morerelayclients`` file of the same keys is read
  ``norelayclients``  the forms of ``relayclients``; a match here wins over the
                      others and over ``RELAYCLIENT``

A ``RELAYCLIENT`` variable in the session environment (tcpserver's rules
file) also grants relaying.  The result is ``connection.relay_client``, which
``rcpt_ok`` and other plugins read.
"""
from qpgevent import DECLINED, DENY, LOGINFO, OK
from qpgevent.netlist import ip_in, ip_keys

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
    qp.config_map("morerelayclients")  # a damaged cdb stops the start-up, naming the file
    if options.get(_ONLY) == "1":
        self.register_hook("rcpt", "relay_only")


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
    elif in_map(self.qp.config_map("morerelayclients"), ip):
        connection.relay_client = True
        self.log(LOGINFO, "pass, %s is in morerelayclients" % ip)
    return DECLINED


def in_map(entries, ip):
    """True when one of qpsmtpd's lookup keys for ``ip`` is in ``entries``."""
    return bool(entries) and any(key in entries for key in ip_keys(ip))


def relay_only(self, transaction, recipient, **params):
    if self.qp.connection.relay_client:
        return OK
    return DENY
