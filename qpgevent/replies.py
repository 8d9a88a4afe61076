"""Every reply the core sends, with its RFC 3463 enhanced status code, in one registry.

A plugin message replaces the text of a reply but keeps its code and enhanced
status; a plugin that writes its own status (``5.7.1 ...``) or the qpsmtpd
``(#5.7.1)`` suffix keeps that one instead.
"""
import re
from typing import NamedTuple, Optional, Sequence


class Reply(NamedTuple):
    """One SMTP reply: code, enhanced status (None where RFC 2034 forbids one), text."""

    code: int
    status: Optional[str]
    text: str


# Greeting, HELO/EHLO: RFC 2034 section 3 puts no enhanced code on these.
GREETING = Reply(220, None, "{me} ESMTP qpgevent {version} ready; send us your mail, but not your spam.")
HELO_OK = Reply(250, None, "{me} Hi {remote_info} [{remote_ip}]; I am so happy to meet you.")
EHLO_OK = Reply(250, None, "{me} Hi {remote_info} [{remote_ip}]")
CONNECT_DENY = Reply(554, "5.7.1", "Connection from you denied, bye bye.")
CONNECT_DENYSOFT = Reply(450, "4.7.1", "Connection from you temporarily denied, bye bye.")
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "{me} Too many connections, try again later")
TOO_MANY_FROM_IP = Reply(421, "4.7.0", "{me} Too many connections from your address, try again later")
PRECONNECT_DENY = Reply(554, "5.7.1", "Sorry, service not available for you")
PRECONNECT_DENYSOFT = Reply(451, "4.7.1", "Sorry, try again later")

HELO_NO_HOST = Reply(501, "5.5.4", "{verb} requires domain/address - see RFC-5321 4.1.1.1")
HELO_AGAIN = Reply(503, "5.5.1", "but you already said HELO ...")
HELO_DENY = Reply(550, "5.7.1", "HELO/EHLO denied")
HELO_DENYSOFT = Reply(450, "4.7.1", "HELO/EHLO temporarily denied")

MAIL_NO_HELO = Reply(503, "5.5.1", "please say hello first ...")
MAIL_NESTED = Reply(503, "5.5.1", "nested MAIL command")
MAIL_SYNTAX = Reply(501, "5.5.4", "could not parse your mail from command")
MAIL_OK = Reply(250, "2.1.0", "{addr}, sender OK - how exciting to get mail from you!")
MAIL_DENY = Reply(550, "5.7.1", "{addr}, denied")
MAIL_DENYSOFT = Reply(450, "4.7.1", "{addr}, temporarily denied")
MAIL_DENYSOFT_DISCONNECT = Reply(421, "4.7.1", "{addr}, temporarily denied")
MAIL_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size ({databytes})")
SYNTAX_COMMAND = Reply(501, "5.5.4", "Syntax error in command")
SYNTAX_PARAMETERS = Reply(501, "5.5.4", "Syntax error in parameters")
BAD_PARAMETER = Reply(555, "5.5.4", "{param} parameter not recognized or not implemented")

RCPT_NO_MAIL = Reply(503, "5.5.1", "Use MAIL before RCPT")
RCPT_SYNTAX = Reply(501, "5.1.3", "could not parse recipient")
RCPT_OK = Reply(250, "2.1.5", "{addr}, recipient ok")
RCPT_UNDECIDED = Reply(450, "4.7.1", "No plugin decided if relaying is allowed")
RCPT_DENY = Reply(550, "5.7.1", "relaying denied")
RCPT_DENYSOFT = Reply(450, "4.7.1", "relaying denied")
RCPT_DENY_DISCONNECT = Reply(550, "5.7.1", "delivery denied")
RCPT_DENYSOFT_DISCONNECT = Reply(421, "4.7.1", "relaying denied")
RCPT_TOO_MANY = Reply(452, "4.5.3", "Too many recipients")

DATA_GO_AHEAD = Reply(354, None, "go ahead")
DATA_NO_MAIL = Reply(503, "5.5.1", "MAIL first")
DATA_NO_RCPT = Reply(503, "5.5.1", "RCPT first")
DATA_DENY = Reply(554, "5.7.1", "Message denied")
DATA_DENYSOFT = Reply(451, "4.7.1", "Message denied temporarily")
DATA_HEADERS_DENYSOFT = Reply(421, "4.7.1", "Message denied temporarily")
DATA_INCOMPLETE = Reply(451, "4.3.0", "Incomplete DATA")
DATA_TOO_BIG = Reply(552, "5.3.4", "Message too big!")
DATA_LINE_TOO_LONG = Reply(552, "5.6.0", "Message has a line longer than {limit} octets (RFC 5321 4.5.3.1.6)")
DATA_POST_DENY = Reply(552, "5.7.1", "Message denied")
DATA_POST_DENYSOFT = Reply(452, "4.7.1", "Message denied temporarily")
BARE_NEWLINE = Reply(521, "5.5.2", "{me} Bare CR or LF in {where}; only CRLF ends a line (RFC 5321 2.3.8)")

QUEUE_OK = Reply(250, "2.0.0", "Queued")
QUEUE_DENY = Reply(552, "5.7.1", "Message denied")
QUEUE_DENYSOFT = Reply(452, "4.7.1", "Message denied temporarily")
QUEUE_DECLINED = Reply(451, "4.3.0", "Queuing declined or disabled; try again later")

DATA_AFTER_BDAT = Reply(503, "5.5.1", "DATA is not allowed after BDAT in one transaction")
BINARYMIME_NEEDS_BDAT = Reply(503, "5.6.1", "BODY=BINARYMIME needs BDAT, not DATA")
BDAT_OK = Reply(250, "2.0.0", "{size} octets received")
BDAT_SYNTAX = Reply(501, "5.5.4", "BDAT needs a chunk size, and LAST or nothing after it")
NEED_SMTPUTF8 = Reply(553, "5.6.7", "Non-ASCII address needs the SMTPUTF8 parameter")

AUTH_OK = Reply(235, "2.7.0", "{mechanism} authentication successful for {user}{detail}")
AUTH_FAILED = Reply(535, "5.7.8", "{mechanism} authentication failed for {user} from {ip}{detail}")
AUTH_TEMPFAIL = Reply(454, "4.7.0", "Temporary authentication failure, try again later{detail}")
AUTH_NEEDS_EHLO = Reply(503, "5.5.1", "AUTH not defined for HELO")
AUTH_NO_HELLO = Reply(503, "5.5.1", "please say EHLO first ...")
AUTH_NEEDS_TLS = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
AUTH_AGAIN = Reply(503, "5.5.1", "but you already said AUTH ...")
AUTH_IN_TRANSACTION = Reply(503, "5.5.1", "AUTH is not allowed during a mail transaction")
AUTH_UNKNOWN_MECHANISM = Reply(504, "5.5.4", "Unimplemented authentication mechanism: {mechanism}")
AUTH_TOO_MANY = Reply(421, "4.7.0", "{me} Too many failed authentication attempts, closing connection")

RSET_OK = Reply(250, "2.0.0", "OK")
NOOP_OK = Reply(250, "2.0.0", "OK")
NOOP_DENY = Reply(500, "5.5.1", "Stop wasting my time.")
VRFY_OK = Reply(250, "2.1.5", "User OK")
VRFY_UNKNOWN = Reply(252, "2.1.5", "Just try sending a mail and we'll see how it turns out ...")
VRFY_DENY = Reply(554, "5.7.1", "Access Denied")
HELP = Reply(214, "2.0.0", "This is qpgevent {version}\nSee https://github.com/smtpd/qpsmtpd for the plugin model")
HELP_DENY = Reply(500, "5.5.1", "Syntax error, command not recognized")
QUIT = Reply(221, "2.0.0", "{me} closing connection. Have a wonderful day.")

UNRECOGNIZED = Reply(500, "5.5.1", "Unrecognized command")
PROXY_REFUSED = Reply(554, "5.7.1", "{me} PROXY header not accepted from your address")
XCLIENT_REFUSED = Reply(550, "5.7.0", "{verb} not allowed from your address")
XCLIENT_IN_TRANSACTION = Reply(503, "5.5.1", "{verb} is not allowed during a mail transaction")
XFORWARD_OK = Reply(250, "2.0.0", "Ok")
UNRECOGNIZED_DISCONNECT = Reply(521, "5.5.1", "Closing connection")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
BAD_BYTES = Reply(500, "5.5.2", "Command contains bytes that are not printable ASCII")
TIMEOUT = Reply(421, "4.4.2", "{me} Connection Timed Out")
SESSION_TOO_LONG = Reply(421, "4.4.2", "{me} Session lasted too long, closing connection")
SHUTDOWN = Reply(421, "4.3.2", "{me} Service shutting down, try again later")
INTERNAL_ERROR = Reply(451, "4.3.0", "Internal error - try again later - {detail}")
PLUGIN_FAILED = Reply(451, "4.3.0", "Temporary failure in a mail filter, try again later")
PLUGIN_FAILED_DISCONNECT = Reply(421, "4.3.0", "{me} Temporary failure in a mail filter, try again later")

REGISTRY = {name: value for name, value in globals().items() if isinstance(value, Reply)}

_STATUS_AT_START = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")
_QPSMTPD_DSN = re.compile(r"\(#([245])\.(\d{1,3})\.(\d{1,3})\)")
_CLASS_AT_START = re.compile(r"^[245](?=\.\d{1,3}\.\d{1,3}(?: |$))")


def status_for(code: int, default: Optional[str], lines: Sequence[str]) -> Optional[str]:
    """The enhanced status to put before ``lines``: theirs, the qpsmtpd ``(#x.y.z)`` one, or ``default``.

    The class digit always follows the reply code, so a DENYSOFT with a
    ``(#5.7.1)`` message goes out as ``450 4.7.1``.
    """
    if default is None or not lines:
        return default
    first = lines[0]
    if _STATUS_AT_START.match(first):
        return ""  # the text already carries one
    found = _QPSMTPD_DSN.search(first)
    subject_detail = "%s.%s" % found.group(2, 3) if found else default.split(".", 1)[1]
    return "%d.%s" % (code // 100, subject_detail)


def match_class(code: int, lines: Sequence[str]) -> list:
    """``lines`` with each leading enhanced status given the reply code's class.

    A plugin that writes ``5.7.1 greylisted`` and returns DENYSOFT must not
    send ``450 5.7.1``: clients trust the status class (RFC 3463 3.1).
    """
    if code // 100 not in (2, 4, 5):
        return list(lines)
    return [_CLASS_AT_START.sub(str(code // 100), line) for line in lines]


def format_reply(code: int, status: Optional[str], lines: Sequence[str]) -> bytes:
    """Wire form of a reply: ``code-`` on every line but the last, one CRLF each."""
    status = status + " " if status else ""
    last = "%d %s%s\r\n" % (code, status, lines[-1])
    if len(lines) > 1:
        more = "%d-%s" % (code, status)
        last = more + ("\r\n" + more).join(lines[:-1]) + "\r\n" + last
    return last.encode("utf-8", "surrogateescape")


def split_lines(messages: Sequence[object]) -> list:
    """Plugin messages as reply lines: split on newlines, CRs dropped, empty ones gone."""
    lines = []
    for message in messages:
        if message is None:
            continue
        for line in str(message).replace("\r", "").split("\n"):
            if line:
                lines.append(line)
    return lines
