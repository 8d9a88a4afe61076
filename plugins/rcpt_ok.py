"""rcpt_ok: accept recipients in our domains; refuse the rest unless the client may relay.

Arguments: none.

Config files:
  ``me``         our host name; ``<postmaster>`` without a domain (RFC 5321 4.1.1.3) is always ours
  ``rcpthosts``  domains we accept mail for, one a line; ``.example.com`` also matches
                 every subdomain of example.com

Relay clients (``connection.relay_client``, set by ``relay`` or AUTH) may send
anywhere.  Everything else gets ``550 5.7.1 Relaying denied``.  List this
plugin after every other rcpt plugin: it is the one that says yes.
"""
from qpgevent import DENY, LOGINFO, OK


def hook_rcpt(self, transaction, recipient, **params):
    host = (recipient.host or "").lower().rstrip(".")
    if not host:
        if (recipient.user or "").lower() == "postmaster":
            self.log(LOGINFO, "pass, %s without domain" % recipient.user)
            return OK
        return DENY, "Relaying denied (#5.7.1)"
    if is_in_rcpthosts(self.qp, host):
        self.log(LOGINFO, "pass, %s is in rcpthosts" % host)
        return OK
    if self.qp.connection.relay_client:
        self.log(LOGINFO, "pass, relay client")
        return OK
    self.log(LOGINFO, "fail, %s is not one of our domains" % host)
    return DENY, "Relaying denied (#5.7.1)"


def is_in_rcpthosts(qp, host):
    me = (qp.config("me") or "").lower()
    if host == me:
        return True
    for entry in qp.config_list("rcpthosts"):
        entry = entry.lower().strip()
        if entry == host or (entry.startswith(".") and host.endswith(entry)):
            return True
    return False
