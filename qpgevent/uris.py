"""The domains and IP addresses a message's text points to, for URI blocklists (the uribl plugin).

The text parts of the message are decoded (quoted-printable, base64, their
charset), URL escapes and HTML entities undone, then searched for URLs
(``http://host``, ``href="https://host/"``, any scheme) and bare host names
(``www.example.com``, ``example.co.uk``).  A host counts by its registrable
domain (the public suffix list: ``a.b.example.co.uk`` is ``example.co.uk``);
a name under no known public suffix (``file.txt``) is no host.  IPv4
addresses in URLs count too, in the forms browsers accept (``0x7f.1.1.1``,
``017.1.1.1``, ``2130706433``).
"""
import email
import email.policy
import html
import ipaddress
import re
from typing import Iterable, Iterator, List, NamedTuple, Optional
from urllib.parse import unquote

from publicsuffixlist import PublicSuffixList

# Spam points to its sites near the top; scanning a 50 MB message whole would hold the CPU.
SCAN_LIMIT = 1 << 20

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = r"%s(?:\.%s)+" % (_LABEL, _LABEL)
_URL = re.compile(r"\b[a-z][a-z0-9+.-]{1,15}:/{1,3}(?:[^\s/@<>\"']*@)?([^\s/?#:<>\"'\\]+)", re.IGNORECASE)
_BARE = re.compile(r"(?<![\w.-])(%s)(?![\w-])" % _HOST, re.IGNORECASE)
_OCTET = re.compile(r"(?:0x[0-9a-f]+|0[0-7]*|[1-9][0-9]*)\Z", re.IGNORECASE)

_psl = None


class Target(NamedTuple):
    """What a URI points to: ``name`` as shown in logs, ``key`` as looked up in a list."""

    name: str
    key: str
    is_ip: bool


def public_suffixes() -> PublicSuffixList:
    """The public suffix list, read once per process (unknown top-level names are not domains)."""
    global _psl
    if _psl is None:
        _psl = PublicSuffixList(accept_unknown=False)
    return _psl


def message_texts(data: bytes, headers: bool = False) -> Iterator[str]:
    """The decoded text parts of a message (and its header values with ``headers``)."""
    message = email.message_from_bytes(data, policy=email.policy.compat32)
    if headers:
        yield "\n".join(str(value) for value in message.values())
    for part in message.walk():
        if part.is_multipart() or part.get_content_maintype() != "text":
            continue
        payload = part.get_payload(decode=True) or b""
        try:
            yield payload.decode(part.get_content_charset() or "utf-8", "replace")
        except LookupError:  # an unknown charset: the host names are ASCII anyway
            yield payload.decode("latin-1")


def targets(texts: Iterable[str], check_ip: bool = True) -> List[Target]:
    """The registrable domains (and IPv4 addresses with ``check_ip``) of ``texts``, first seen first, once each."""
    found = {}
    for text in texts:
        text = html.unescape(unquote(text))
        for match in _URL.finditer(text):
            host = match.group(1).strip("[].").lower()
            ip = _ipv4(host)
            if ip is not None:
                if check_ip:
                    found.setdefault(ip, Target(ip, ".".join(reversed(ip.split("."))), True))
            else:
                _add_domain(found, host)
        for match in _BARE.finditer(text):
            _add_domain(found, match.group(1).lower())
    return list(found.values())


def _add_domain(found: dict, host: str) -> None:
    if not re.fullmatch(_HOST, host):
        return
    domain = public_suffixes().privatesuffix(host)
    if domain is not None:
        found.setdefault(domain, Target(domain, domain, False))


def _ipv4(host: str) -> Optional[str]:
    """``host`` as a dotted IPv4 address if it is one in any form a browser reads; else None."""
    if host.isdigit():
        number = int(host)
        return str(ipaddress.IPv4Address(number)) if 1 << 24 <= number < 1 << 32 else None
    parts = host.split(".")
    if len(parts) != 4 or not all(_OCTET.match(part) for part in parts):
        return None
    octets = [int(part, 16) if part.lower().startswith("0x") else int(part, 8) if part.startswith("0") else int(part)
              for part in parts]
    return ".".join(map(str, octets)) if all(octet < 256 for octet in octets) else None
