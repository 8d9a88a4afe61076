"""rcpt_ok: accept recipients in our domains; refuse the rest unless the client may relay.

Arguments: none.

Config files:
  ``me``         our host name; ``<postmaster>`` (RFC 5321 4.1.1.3) and ``<abuse>``
                 without a domain are addressed to it, as in qpsmtpd's rcpt_ok.  Any
                 other local part without a domain is refused by the core's address
                 parser with ``501``
  ``rcpthosts``  domains we accept mail for, one a line; ``.example.com`` also matches
                 every subdomain of example.com.  Internationalised names match
                 in either form: ``bücher.example`` is ``xn--bcher-kva.example``
  ``morercpthosts.cdb``  qmail's long list (made by qmail-newmrh), looked up
                 by the domain, then, as qmail does, by ``.parent.domain`` keys;
                 without a cdb a plain ``morercpthosts`` file is read the same way

Relay clients (``connection.relay_client``, set by ``relay`` or AUTH) may send
anywhere.  Everything else gets ``550 5.7.1 Relaying denied``.  List this
plugin after every other rcpt plugin: it is the one that says yes.
"""
from qpgevent import DENY, LOGINFO, OK
from qpgevent.address import LOCAL_ONLY, domain_key

def register(self, qp, *args):
    qp.config_map("morercpthosts")  # a damaged cdb stops the start-up, naming the file


def hook_rcpt(self, transaction, recipient, **params):
    host = domain_key(recipient.host or "")
    if not host:
        if (recipient.user or "").lower() in LOCAL_ONLY:
            self.log(LOGINFO, "pass, %s without domain is ours" % recipient.user)
            return OK
        return DENY, "Relaying denied (#5.7.1)"
    if is_in_rcpthosts(self.qp, host):
        self.log(LOGINFO, "pass, %s is in rcpthosts" % recipient.host)
        return OK
    if is_in_morercpthosts(self.qp, host):
        self.log(LOGINFO, "pass, %s is in morercpthosts" % recipient.host)
        return OK
    if self.qp.connection.relay_client:
        self.log(LOGINFO, "pass, relay client")
        return OK
    self.log(LOGINFO, "fail, %s is not one of our domains" % recipient.host)
    return DENY, "Relaying denied (#5.7.1)"


def is_in_rcpthosts(qp, host):
    """``host`` (a domain_key) is me, a rcpthosts domain, or below a ``.domain`` entry."""
    if host == domain_key(qp.config("me") or ""):
        return True
    for entry in qp.config_list("rcpthosts"):
        entry = entry.strip()
        if entry.startswith("."):
            if host.endswith("." + domain_key(entry[1:])):
                return True
        elif host == domain_key(entry):
            return True
    return False


def is_in_morercpthosts(qp, host):
    """``host`` or one of its ``.parent`` domains is a key of morercpthosts (qmail's rcpthosts.c lookups)."""
    entries = qp.config_map("morercpthosts")
    if not entries:
        return False
    labels = host.split(".")
    return host in entries or any("." + ".".join(labels[i:]) in entries for i in range(1, len(labels)))
