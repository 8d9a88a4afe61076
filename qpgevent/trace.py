"""Trace header fields the server adds to each message: Received (RFC 5321 4.4) and
Authentication-Results (RFC 8601), and the cleaning of forged ones.

``stamp(session)`` is the one entry point, called by the session once the
message has arrived and before ``data_post``.
"""
import re
import time
from email.utils import formatdate
from typing import Any, Optional, Set

from .constants import OK
from .header import Header

AUTH_RESULTS = "Authentication-Results"
RENAMED_AUTH_RESULTS = "Original-Authentication-Results"
_TOKEN_USER = re.compile(r"[!#-'*+\-/-9=?A-Z^-~.@]+")  # RFC 8601 value: a token, else quote it


def stamp(session: Any) -> None:
    """Clean the client's Authentication-Results, then prepend Received and our Authentication-Results.

    The authserv-id is config ``me-auth-results``, else ``me``; ``none``
    turns Authentication-Results off (cleaning included).
    """
    header = session.transaction.header
    authserv_id = session.config("me-auth-results") or session.me
    if authserv_id != "none":
        clean_authentication_results(header, authserv_id)
    header.add("Received", received_line(session), 0)
    results = authentication_results(session, authserv_id) if authserv_id != "none" else None
    if results:
        header.add(AUTH_RESULTS, results, 0)


def received_line(session: Any) -> str:
    """The Received value: a ``received_line`` plugin's lines, or the default."""
    connection = session.connection
    # RFC 3848 and RFC 6531 7.1: ESMTP / UTF8SMTP, then S for TLS, A for AUTH.
    if "smtputf8" in session.transaction.notes.get("mail_parameters", {}):
        proto = "UTF8SMTP"
    else:
        proto = "ESMTP" if connection.hello == "ehlo" else "SMTP"
    if proto != "SMTP":
        proto += ("S" if connection.notes.get("tls_enabled") else "") + ("A" if session.auth_user else "")
    tls = connection.notes.get("tls_cipher")
    if tls:
        tls = "%s %s" % (connection.notes.get("tls_version"), tls)
    result = session.run_hooks("received_line", proto, session.auth_user, tls, failures="log")
    if result.rc == OK and result.messages:
        return "\n".join(str(m) for m in result.messages)
    return "from %s (HELO %s) (%s)\n by %s (qpgevent/%s) with %s%s; %s" % (
        connection.remote_info, connection.hello_host, connection.remote_ip, session.me, session.smtpd.version,
        proto, " (%s encrypted)" % tls if tls else "", rfc5322_date())


def authentication_results(session: Any, authserv_id: str) -> Optional[str]:
    """Our Authentication-Results value, or None when there is nothing to report.

    It holds the AUTH result (after an AUTH attempt) and what plugins stored
    with ``store_auth_results`` (SPF, DKIM, DMARC, iprev).
    """
    method = None
    if session.auth_user:
        user = session.auth_user
        if not _TOKEN_USER.fullmatch(user):
            user = '"%s"' % re.sub(r'(["\\])', r"\\\1", user)
        method = "auth=pass (%s) smtp.auth=%s" % (session.auth_mechanism, user)
    elif session.auth_failures:
        method = "auth=fail"
    transaction = session.made_transaction
    stored = "; ".join(filter(None, [session.connection.notes.get("authentication_results"),
                                     transaction.notes.get("authentication_results") if transaction else None]))
    if not (method or stored):
        return None
    return "; ".join(filter(None, [authserv_id, method, stored]))


def clean_authentication_results(header: Header, authserv_id: str) -> None:
    """Rename the client's Authentication-Results to Original-Authentication-Results where needed.

    RFC 8601 5: a field that claims our own authserv-id is forged (we have
    not added ours yet), so it is always renamed, DKIM signature or not.  A
    field with a foreign id is left alone when a DKIM-Signature's ``h=``
    covers Authentication-Results (renaming would break the signature, and
    nobody here trusts a foreign id anyway); without such a signature it is
    renamed too, the simple and safe choice RFC 8601 5 allows.
    """
    if AUTH_RESULTS.lower() not in (name.lower() for name, _ in header.fields):
        return
    ours = authserv_id.lower()
    keep_foreign = AUTH_RESULTS.lower() in dkim_signed_fields(header)
    fields = []
    for name, value in header.fields:
        if name.lower() == AUTH_RESULTS.lower():
            found = parse_authserv_id(value)
            if found is None or found.lower() == ours or not keep_foreign:
                name = RENAMED_AUTH_RESULTS
        fields.append((name, value))
    header.fields = fields


def dkim_signed_fields(header: Header) -> Set[str]:
    """The (lower-case) field names listed in the ``h=`` tag of any DKIM-Signature (RFC 6376 3.5)."""
    names: Set[str] = set()
    for signature in header.get_all("DKIM-Signature"):
        for tag in signature.split(";"):
            key, eq, value = tag.partition("=")
            if eq and key.strip() == "h":
                names.update(re.sub(r"\s+", "", name).lower() for name in value.split(":"))
    return names


def parse_authserv_id(value: str) -> Optional[str]:
    """The authserv-id at the start of an Authentication-Results value (RFC 8601 2.2), or None.

    Leading CFWS (white space and nested comments) is skipped; the id is a
    token or a quoted-string, and whatever follows it (a version, ``;``) is not part of it.
    """
    position = _skip_cfws(value, 0)
    if position is None or position >= len(value):
        return None
    if value[position] == '"':
        out = []
        position += 1
        while position < len(value):
            char = value[position]
            if char == "\\" and position + 1 < len(value):
                out.append(value[position + 1])
                position += 2
                continue
            if char == '"':
                return "".join(out)
            out.append(char)
            position += 1
        return None  # unterminated quoted-string
    found = re.match(r'[^\s;()"]+', value[position:])
    return found.group() if found else None


def _skip_cfws(value: str, position: int) -> Optional[int]:
    """The index after the white space and (nested) comments at ``position``; None if a comment never ends."""
    depth = 0
    while position < len(value):
        char = value[position]
        if depth:
            if char == "\\":
                position += 1
            elif char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
        elif char == "(":
            depth = 1
        elif not char.isspace():
            return position
        position += 1
    return None if depth else position


_date_cache = [0, ""]


def rfc5322_date() -> str:
    """The current local time in RFC 5322 form, made at most once a second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[:] = [now, formatdate(now, localtime=True)]
    return _date_cache[1]
