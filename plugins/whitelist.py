"""whitelist: exempt listed hosts, HELO names, senders and recipients from the plugins after it.

List it before the plugins it should exempt.  At each stage a listed value
answers ``OK``, so the plugins after it in that hook are not asked, and
leaves a note that later plugins read (``self.is_immune()`` reads
``whitelisthost`` and ``whitelistsender``):

=================== ======= ================================ =====================================
config file         hook    entries                          note
=================== ======= ================================ =====================================
``whitelisthosts``  connect IPs, CIDR networks, prefixes     connection ``whitelisthost`` (karma +5)
                            (``192.168.``, ``2001:db8:``),
                            as ``relayclients``
``whitelisthelo``   helo,   HELO/EHLO names                  connection ``whitelisthelo``
                    ehlo
``whitelistsenders`` mail   addresses or domains             transaction ``whitelistsender``
``whitelistrcpt``   rcpt    addresses or domains             transaction ``whitelistrcpt`` (the
                                                             number of whitelisted recipients)
=================== ======= ================================ =====================================

A ``WHITELISTCLIENT`` variable in the session environment (tcpserver's rules
file) whitelists the client at connect too, with the note ``whitelistclient``
(not ``whitelisthost``: other plugins do not treat it as immune).  Domains
match without regard to case; ``@domain`` is read as ``domain``.

.. caution:: ``OK`` at ``rcpt`` accepts the recipient: a ``whitelistrcpt``
   entry outside your domains makes you a relay for it.

Arguments::

    whitelist [per_recipient 1] [merge 0|1] [loglevel N]

``per_recipient 1`` does every check at ``rcpt`` instead, with each
recipient's own lists (a ``user_config`` plugin answers
``config(name, address=recipient)``), merged with the global ones unless
``merge 0``.  In this mode a whitelisted host, HELO or sender accepts the
recipient (``OK`` at ``rcpt``), as in qpsmtpd.

Differences from qpsmtpd: host entries take the forms of ``relayclients``;
a fragment that ends inside an octet (``192.168.1`` for ``192.168.1x.y``) no
longer matches as a string prefix.  Notes are per session (qpsmtpd kept the
HELO of per_recipient mode on the plugin, shared by every connection).
"""
from qpgevent import DECLINED, LOGINFO, LOGNOTICE, OK, arguments
from qpgevent.address import domain_key
from qpgevent.addresslist import address_key
from qpgevent.netlist import ip_in

ARGUMENTS = {
    "per_recipient": arguments.flag(),
    "merge": arguments.flag(default=True),
}
_CHECKS = ("check_host", "check_helo", "check_sender", "check_rcpt")


def register(self, qp, *args):
    if self.options.per_recipient:
        for check in _CHECKS:
            self.register_hook("rcpt", check)
    else:
        for hook, check in (("connect", "check_host"), ("helo", "check_helo"), ("ehlo", "check_helo"),
                            ("mail", "check_sender"), ("rcpt", "check_rcpt")):
            self.register_hook(hook, check)


def entries(self, name, recipient=None):
    """The lines of ``name``; in per_recipient mode the recipient's (and, with merge, the global ones too)."""
    if recipient is None:
        return self.qp.config_list(name)
    lines = self.qp.config_list(name, address=recipient)
    if self.options.merge:
        lines = lines + [line for line in self.qp.config_list(name) if line not in lines]
    return lines


def check_host(self, transaction, recipient=None, **params):
    connection = self.qp.connection
    ip = connection.remote_ip
    if not ip:
        return DECLINED
    if "WHITELISTCLIENT" in self.qp.env:
        connection.notes["whitelistclient"] = True
        self.adjust_karma(5)
        self.log(LOGNOTICE, "pass, %s is a whitelisted client" % ip)
        return OK
    if ip_in(ip, entries(self, "whitelisthosts", recipient)):
        connection.notes["whitelisthost"] = True
        self.adjust_karma(5)
        self.log(LOGNOTICE, "pass, %s is a whitelisted host" % ip)
        return OK
    self.log(LOGINFO, "skip, %s is not whitelisted" % ip)
    return DECLINED


def check_helo(self, transaction, host, *extra, **params):
    connection = self.qp.connection
    recipient = host if self.options.per_recipient else None
    helo = connection.hello_host if recipient is not None else host
    if helo and helo.lower() in (entry.lower() for entry in entries(self, "whitelisthelo", recipient)):
        connection.notes["whitelisthelo"] = True
        self.log(LOGNOTICE, "pass, HELO host %s is in whitelisthelo" % helo)
        return OK
    return DECLINED


def listed(address, lines):
    """True when ``address``, or its domain, is one of ``lines`` (``user@host``, ``host`` or ``@host``)."""
    if not address.user or not address.host:
        return False
    whole, host = address_key(address.user, address.host), domain_key(address.host)
    for line in lines:
        words = line.split()
        if not words:
            continue
        user, _, domain = words[0].rpartition("@")
        if address_key(user, domain) == whole if user else domain_key(domain) == host:
            return True
    return False


def check_sender(self, transaction, address, **params):
    recipient = address if self.options.per_recipient else None
    sender = transaction.sender if recipient is not None else address
    if sender is None or not listed(sender, entries(self, "whitelistsenders", recipient)):
        return DECLINED
    transaction.notes["whitelistsender"] = True
    self.log(LOGNOTICE, "pass, envelope sender %s is in whitelistsenders" % sender)
    return OK


def check_rcpt(self, transaction, recipient, **params):
    lists = entries(self, "whitelistrcpt", recipient if self.options.per_recipient else None)
    if not listed(recipient, lists):
        return DECLINED
    transaction.notes["whitelistrcpt"] = transaction.notes.get("whitelistrcpt", 0) + 1
    self.log(LOGNOTICE, "pass, recipient %s is in whitelistrcpt" % recipient)
    return OK
