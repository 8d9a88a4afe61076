"""dnsbl: refuse mail from clients whose address a DNS blocklist (an "RBL") lists.

At connect the client's address is looked up in every zone of
``dnsbl_zones`` at once (IPv4 as ``7.2.0.192.<zone>``, IPv6 by nibbles as
RFC 5782 says); a listing is stored in the connection note ``dnsbl`` (the
reply text) and costs a point of ``karma``.  The refusal comes at RCPT, so
that mail to ``postmaster``, ``abuse``, ``mailer-daemon`` and ``root`` (any
domain) still gets through: RFC 5321 4.5.1 wants postmaster reachable, and
a listed sender needs a way to ask for delisting.

Arguments::

    dnsbl [reject 1|0|naughty] [reject_type perm|temp|disconnect|temp_disconnect] [timeout N] [loglevel N]

``reject 1`` (default)
    Refuse every other recipient with the listing's reason (550 5.7.1).
``reject 0``
    Only log the listing (the note is set all the same).
``reject naughty``
    Store the refusal at connect for the ``naughty`` plugin; one of the
    special recipients above clears the connection's ``naughty`` note, as
    in qpsmtpd, and a later ordinary recipient stores ours again (so
    ``postmaster`` first does not open the door for the others).
``reject_type``
    The refusal's kind; ``disconnect`` hangs up after it.
``timeout``
    qpsmtpd's per-lookup timeout; accepted and ignored: config ``dns_timeout``
    bounds every lookup, and all zones are asked at once.

Config files:
  ``dnsbl_zones``  one list a line: ``zone``, whose TXT record is the reason
                   given to the client, or ``zone:message`` with your own
                   reason (``%IP%`` becomes the client's address), for lists
                   that publish no TXT.  A zone that times out or answers
                   SERVFAIL is logged and taken as not listing the client.
  ``dnsbl_allow``  addresses never looked up: IPs, CIDR networks, prefixes
                   such as ``192.168.`` (the forms of ``relayclients``)
  ``dnsbl_rejectmsg``  lines put before the reason in every refusal

The ``RBLSMTPD`` variable (tcpserver's rules file), as rblsmtpd reads it:
unset, the lists are checked; set and empty, they are not; set to a text,
the client is refused with that text (``%IP%`` substituted) as if listed.
qpsmtpd's leading ``-`` (a permanent error in rblsmtpd) has no meaning here
either: use ``reject_type``.

Relay clients and whitelisted hosts (``is_immune``) are never checked, at
connect nor at RCPT (a client that authenticated after connecting is let
through).

Differences from qpsmtpd: it refuses at RCPT as qpsmtpd up to 0.84 did
(qpsmtpd 0.96 refuses at connect, so its postmaster exemption only works
with ``reject naughty``); IPv6 clients are checked; a zone without a
message is asked for A, and for TXT (the reason) only when that lists the
client (qpsmtpd asks only TXT), and only A answers in 127.0.0.0/8 are listings (a Spamhaus 127.255.255.x error code is not);
``dnsbl_rejectmsg`` prefixes every refusal (qpsmtpd 0.96 uses it only with
``RBLSMTPD``).
"""
import re

from qpgevent import DECLINED, LOGINFO, LOGNOTICE, arguments
from qpgevent.dnslist import listings
from qpgevent.netlist import ip_in

ARGUMENTS = {
    "timeout": arguments.number(minimum=0),
}

_SPECIAL_USERS = re.compile(r"(postmaster|abuse|mailer-daemon|root)\Z", re.IGNORECASE)
NOTE = "dnsbl"


def hook_connect(self, transaction):
    ip = self.qp.connection.remote_ip
    rblsmtpd = self.qp.env.get("RBLSMTPD")
    if self.is_immune():
        return DECLINED
    if rblsmtpd == "":
        self.log(LOGINFO, "skip, RBLSMTPD is set and empty for %s" % ip)
        return DECLINED
    if rblsmtpd is not None:
        self.log(LOGINFO, "fail, RBLSMTPD=%r for %s" % (rblsmtpd, ip))
        return listed(self, rblsmtpd, "RBLSMTPD")
    if ip_in(ip, self.qp.config_list("dnsbl_allow")):
        self.log(LOGINFO, "skip, %s is in dnsbl_allow" % ip)
        return DECLINED
    found = listings(self, "dnsbl_zones", ip, separator=":")
    if not found:
        return DECLINED
    first = found[0]
    self.log(LOGINFO, "fail, %s is listed in %s" % (ip, ", ".join(listing.zone.name for listing in found)))
    return listed(self, first.reason or "Blocked by %s" % first.zone.name, first.zone.name)


def listed(self, reason, where):
    """Note the listing (``dnsbl``, karma); with ``reject naughty`` store the refusal now."""
    self.adjust_karma(-1)
    message = refusal(self, reason)
    self.qp.connection.notes[NOTE] = message
    if self.reject == "naughty":
        self.get_reject(message, where)
    return DECLINED


def refusal(self, reason):
    """The reply text: ``dnsbl_rejectmsg`` lines, then the reason with ``%IP%`` replaced."""
    lines = self.qp.config_list("dnsbl_rejectmsg") + [reason.replace("%IP%", self.qp.connection.remote_ip)]
    return "\n".join(lines)


def hook_rcpt(self, transaction, recipient, **params):
    message = self.qp.connection.notes.get(NOTE)
    if not message or self.is_immune():
        return DECLINED
    if _SPECIAL_USERS.match(recipient.user or ""):
        self.log(LOGNOTICE, "skip, mail to %s is let through despite the listing" % recipient)
        if self.reject == "naughty" and self.is_naughty():
            self.is_naughty(0)  # qpsmtpd's exemption: the naughty plugin must not refuse it later
        return DECLINED
    if self.reject == "naughty":
        if not self.is_naughty():
            self.store_deferred_reject(message)  # a special recipient before cleared it
        return DECLINED
    return self.get_reject(message, "listed, refusing %s" % recipient)
