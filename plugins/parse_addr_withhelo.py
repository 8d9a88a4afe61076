"""parse_addr_withhelo: strict RFC 821 parsing of MAIL and RCPT for clients that said HELO.

RFC 821 has no parameters after ``MAIL FROM:<path>`` or ``RCPT TO:<path>``;
they came with ESMTP (RFC 1869).  With this plugin a client that greeted with
HELO (not EHLO) gets ``501 5.5.4 No parameters allowed in MAIL`` (or
``RCPT``) for any; clients that said EHLO are parsed as usual.

For HELO clients the plugin also takes what RFC 821 clients send:

* ``MAIL FROM:`` with nothing after it is the null sender ``<>``;
* an address without angle brackets, ``MAIL FROM:user@example.com``;
* ``RCPT TO:postmaster`` (or ``abuse``) without brackets or domain.

Anything else is ``501 5.5.4 Syntax error in command`` (no ``FROM:`` or
``TO:``) or ``501 5.5.4 Could not parse your MAIL FROM command`` (``RCPT
TO``).

Arguments: only the generic ``loglevel``.  Config files: none.

Differences from qpsmtpd: a bracketed path ends at its first ``>`` (qpsmtpd
took up to the last one, so ``<a@b> <c>`` passed as one path), and ``RCPT
TO:postmaster`` is accepted (qpsmtpd's parser returned nothing for it).
"""
import re

from qpgevent import DECLINED, DENY, OK

ARGUMENTS = {}  # the generic ones only: anything else on the line is a start-up error
_PREFIX = {"mail": re.compile(r"from:\s*", re.IGNORECASE), "rcpt": re.compile(r"to:\s*", re.IGNORECASE)}
_BRACKETED = re.compile(r"(<[^>]*>)\s*")
_LOCAL_ONLY = re.compile(r"(postmaster|abuse)\Z", re.IGNORECASE)


def hook_mail_parse(self, transaction, line):
    return (OK, parse) if self.qp.connection.hello == "helo" else DECLINED


hook_rcpt_parse = hook_mail_parse


def parse(session, verb, line):
    """RFC 821 ``FROM:<path>`` / ``TO:<path>``: ``(OK, "<path>")`` or ``(DENY, why)``."""
    prefix = _PREFIX[verb].match(line)
    if prefix is None:
        return DENY, "Syntax error in command"
    line = line[prefix.end():]
    bracketed = _BRACKETED.match(line)
    if bracketed:
        if line[bracketed.end():]:
            return DENY, "No parameters allowed in %s" % verb.upper()
        return OK, bracketed.group(1)
    line = line.rstrip()
    if "@" in line:
        if re.search(r"@\S+\s+\S", line):
            return DENY, "No parameters allowed in %s" % verb.upper()
        return OK, "<%s>" % line
    if verb == "mail":
        return (OK, "<>") if not line else (DENY, "Could not parse your MAIL FROM command")
    if _LOCAL_ONLY.match(line):
        return OK, "<%s>" % line
    return DENY, "Could not parse your RCPT TO command"
