"""RFC 5321 paths: ``<local@domain>``, ``<>``, and ``<postmaster>`` or ``<abuse>`` without a domain."""
import ipaddress
import re
from functools import lru_cache
from typing import Optional

import idna

# Local parts a client may send without a domain, meaning ours: RFC 5321 4.1.1.3 requires
# postmaster; abuse (RFC 2142) is mapped to us by qpsmtpd's rcpt_ok too.
LOCAL_ONLY = ("postmaster", "abuse")

# RFC 5321 4.1.2: atext of a Dot-string. Dots may repeat or trail, as real mail
# (and Postfix) tolerates; anything else outside atext needs a Quoted-string.
_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"
_DOT_STRING = re.compile(r"[%s.]+\Z" % _ATEXT)
_QUOTED = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*)"\Z')
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(r"%s(?:\.%s)*\.?\Z" % (_LABEL, _LABEL))
_IPV4_LITERAL = re.compile(r"\[(?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}\]\Z")
_IPV6_LITERAL = re.compile(r"\[IPv6:([0-9A-Fa-f:.]{2,45})\]\Z", re.IGNORECASE)
_SOURCE_ROUTE = re.compile(r"@[^,:]+(?:,@[^,:]+)*:")
_NEEDS_QUOTING = re.compile(r"[^%s.]" % _ATEXT)
_UTF8_DOMAIN_LABEL = re.compile(r"[^\x00-\x2c\x2e\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]+\Z")


@lru_cache(maxsize=1024)
def domain_key(domain: str) -> str:
    """A domain as compared: lower case, no root dot, U-labels as their ``xn--`` A-labels.

    ``Bücher.example`` and ``xn--bcher-kva.example`` are one domain.  Strict
    IDNA 2008, label by label, with no mapping: ``ｅｘａｍｐｌｅ.com`` or
    ``example。com`` must not pass for ``example.com`` here while the next hop
    reads them as other names.  A name IDNA refuses is compared as written.
    """
    domain = domain.strip().rstrip(".").lower()
    if domain.isascii():
        return domain
    try:
        return ".".join(label if label.isascii() else idna.alabel(label).decode("ascii")
                        for label in domain.split("."))
    except UnicodeError:  # idna.IDNAError and the codec's own errors
        return domain


def address_literal(host: str) -> Optional[str]:
    """The address inside an RFC 5321 address literal (``[192.0.2.7]``, ``[IPv6:2001:db8::7]``), else None."""
    if _IPV4_LITERAL.match(host):
        return host[1:-1]
    ipv6 = _IPV6_LITERAL.match(host)
    return str(ipaddress.IPv6Address(ipv6.group(1))) if ipv6 and _valid_ipv6(ipv6.group(1)) else None


_HOST_CHARACTERS = re.compile(r"[A-Za-z0-9.-]+\Z")


def fqdn_fault(name: str) -> Optional[str]:
    """Why ``name`` is no fully qualified host name (qpsmtpd's test: a dot, only letters, digits, ``-``, ``.``), or None."""
    if "." not in name.strip("."):
        return "not FQDN"
    if not _HOST_CHARACTERS.match(name):
        return "invalid FQDN chars"
    return None


class AddressError(ValueError):
    """A path that does not parse."""


def _valid_ipv6(literal: str) -> bool:
    # The shape regex admits ":::::::"; only a real parse knows the groups.
    try:
        ipaddress.IPv6Address(literal)
    except ValueError:
        return False
    return True


def _valid_domain(domain: str, utf8: bool) -> bool:
    if _DOMAIN.match(domain) or _IPV4_LITERAL.match(domain):
        return True
    ipv6 = _IPV6_LITERAL.match(domain)
    if ipv6:
        return _valid_ipv6(ipv6.group(1))
    if not utf8 or domain.isascii():
        return False
    # RFC 6531: U-labels are allowed; check shape, not IDNA tables.  Unicode spaces,
    # line separators and invisible format characters are no part of any U-label.
    labels = domain.rstrip(".").split(".")
    return all(_UTF8_DOMAIN_LABEL.match(label) and label.isprintable() and not label.startswith("-") for label in labels)


def _valid_local(local: str, utf8: bool) -> Optional[str]:
    """The local part unquoted, or None when it is not RFC 5321 syntax."""
    if _DOT_STRING.match(local) and not local.startswith("."):
        return local
    quoted = _QUOTED.match(local)
    if quoted:
        # ``""@host`` would otherwise become the null path (no user).
        return re.sub(r"\\(.)", r"\1", quoted.group(1)) or None
    if utf8 and not local.isascii() and local.isprintable() and not re.search(r'[\s"\\(),:;<>@\[\]]', local):
        return local
    return None


class Address:
    """A mail path: ``user`` and ``host`` (both None for the null path ``<>``)."""

    __slots__ = ("user", "host", "notes")

    def __init__(self, user: Optional[str] = None, host: Optional[str] = None) -> None:
        self.user = user or None
        self.host = host or None
        self.notes: dict = {}

    @classmethod
    def parse(cls, path: str, utf8: bool = False) -> "Address":
        """Parse ``<...>``; raises AddressError.  ``utf8`` admits RFC 6531 addresses."""
        if len(path) < 2 or path[0] != "<" or path[-1] != ">":
            raise AddressError("missing angle brackets")
        inner = path[1:-1].strip()
        route = _SOURCE_ROUTE.match(inner)
        if route:  # RFC 5321 4.1.2: source routes are accepted and ignored
            inner = inner[route.end():]
        if not inner:
            return cls()
        if inner.lower() in LOCAL_ONLY:
            return cls(inner)
        if not utf8 and not inner.isascii():
            raise AddressError("non-ASCII address without SMTPUTF8")
        local, at, domain = inner.rpartition("@")
        if not at or not local:
            raise AddressError("address has no domain")
        if len(local) > 64 * (4 if utf8 else 1) or len(domain) > 255:
            raise AddressError("address part too long")
        if not _valid_domain(domain, utf8):
            raise AddressError("invalid domain %r" % domain)
        user = _valid_local(local, utf8)
        if user is None:
            raise AddressError("invalid local part")
        return cls(user, domain)

    @classmethod
    def from_string(cls, text: str) -> "Address":
        """``user@host`` without brackets, split at the last ``@``; no validation."""
        text = text.strip().strip("<>")
        user, at, host = text.rpartition("@")
        return cls(user, host) if at else cls(text or None)

    @property
    def address(self) -> str:
        """``user@host`` without brackets or quoting; '' for the null path."""
        if self.user is None:
            return ""
        return "%s@%s" % (self.user, self.host) if self.host else self.user

    @property
    def is_null(self) -> bool:
        return self.user is None

    def format(self) -> str:
        """``<user@host>``, quoting the local part when RFC 5321 needs it."""
        if self.user is None:
            return "<>"
        user = self.user
        dot_string = not (user.startswith(".") or user.endswith(".") or ".." in user)
        if (_NEEDS_QUOTING.search(user) or not dot_string) and not (not user.isascii() and _valid_local(user, True) == user):
            user = '"%s"' % re.sub(r'(["\\])', r"\\\1", user)
        return "<%s@%s>" % (user, self.host) if self.host else "<%s>" % user

    __str__ = format

    def __repr__(self) -> str:
        return "Address(%r)" % self.format()

    def _key(self) -> tuple:
        return ((self.host or "").lower(), self.user or "")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            other = Address.from_string(other)
        if not isinstance(other, Address):
            return NotImplemented
        return self._key() == other._key()

    def __lt__(self, other: "Address") -> bool:
        return self._key() < other._key()

    def __hash__(self) -> int:
        return hash(self._key())
