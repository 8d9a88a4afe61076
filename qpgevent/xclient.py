"""Postfix's XCLIENT and XFORWARD extensions: a trusted SMTP proxy names the real client.

Postfix's ``smtpd_proxy_filter`` (a before-queue filter) and other proxies
send ``XCLIENT NAME=... ADDR=... PORT=... PROTO=... HELO=... LOGIN=...``
(https://www.postfix.org/XCLIENT_README.html).  Only a peer listed in
``config/xclient_hosts`` may; on success the session begins again as if that
client had just connected: its addresses replace the proxy's, the
``pre-connection`` and ``connect`` hooks run again (relay, dnsbl, fcrdns judge
the client), a new 220 greeting is sent and EHLO is needed again.

Postfix's ``smtpd_proxy_filter`` itself sends XFORWARD, not XCLIENT
(https://www.postfix.org/XFORWARD_README.html): after its EHLO, before MAIL,
answered with 250.  We take it from the same ``xclient_hosts`` and do the
same: the connection becomes the client's and the connect hooks run again;
the session keeps the proxy's EHLO (no new one comes), with the client's HELO
name, which the ``helo``/``ehlo`` hooks are run again for.

Attributes a command leaves out keep the values the last one gave, so a proxy
may split them over several commands.  Mixed into ``Session``; no I/O.
"""
import ipaddress
from typing import Dict, Optional, Sequence

from . import replies as R
from .command import ParseError, decode_xtext
from .connection import Connection
from .constants import LOGINFO
from .netlist import ip_in

ATTRIBUTES = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "LOGIN", "DESTADDR", "DESTPORT")
XFORWARD_ATTRIBUTES = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE")
EHLO_KEYWORDS = ("XCLIENT NAME ADDR PORT PROTO HELO LOGIN", "XFORWARD NAME ADDR PORT PROTO HELO")
UNAVAILABLE = ("[UNAVAILABLE]", "[TEMPUNAVAIL]")  # the proxy does not know (TEMPUNAVAIL: not now)
MAX_VALUE = 255  # Postfix's limit for NAME and HELO; longer values of any attribute are refused
_TRANSPORT_NOTES = ("smtps", "tls_enabled", "tls_version", "tls_cipher", "tls_peer_certificate", "tls_via_proxy")


def parse_xclient(line: str, names: Sequence[str] = ATTRIBUTES, verb: str = "XCLIENT") -> Dict[str, str]:
    """``NAME=x ADDR=y`` -> {``NAME``: ``x``, ``ADDR``: ``y``}: names upper-cased, values decoded and checked."""
    attributes: Dict[str, str] = {}
    for word in line.split():
        name, eq, value = word.partition("=")
        name = name.upper()
        if not eq or name not in names:
            raise ParseError("Bad %s attribute %r: say NAME=VALUE with NAME one of %s"
                             % (verb, word[:40], " ".join(names)))
        try:
            value = decode_xtext(value)
        except ValueError:
            raise ParseError("%s %s value %r is not UTF-8 xtext" % (verb, name, value[:40])) from None
        if not value or len(value) > MAX_VALUE:
            raise ParseError("%s must be 1 to %d characters" % (name, MAX_VALUE))
        if value.upper() in UNAVAILABLE:
            value = value.upper()
        else:
            value = _check(name, value)
        attributes[name] = value
    if not attributes:
        raise ParseError("%s needs at least one attribute" % verb)
    return attributes


def _check(name: str, value: str) -> str:
    """One known value in its normal form; ParseError if it is not one."""
    if name in ("ADDR", "DESTADDR"):
        text = value[5:] if value[:5].upper() == "IPV6:" else value
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            address = None
        if address is None or (address.version == 6) != (text is not value) or "%" in text:
            raise ParseError("%s %r is neither an IPv4 address nor IPV6: and an IPv6 address" % (name, value))
        return str(address)
    if name in ("PORT", "DESTPORT"):
        if not value.isdigit() or int(value) > 65535:
            raise ParseError("%s %r is not a port number" % (name, value))
        return str(int(value))
    if name == "PROTO":  # SMTP or ESMTP; XFORWARD allows other protocol names
        if not value.isalnum():
            raise ParseError("PROTO %r is not a protocol name such as SMTP or ESMTP" % value)
        return value.upper()
    if name in ("NAME", "HELO") and any(c.isspace() or not c.isprintable() for c in value):
        raise ParseError("%s %r has spaces or control characters" % (name, value))
    return value


def _known(attributes: Dict[str, str], name: str) -> Optional[str]:
    value = attributes.get(name)
    return None if value in UNAVAILABLE else value


def client_connection(old: Connection, given: Dict[str, str]) -> Connection:
    """The connection as the proxy describes it: ``given`` over what earlier XCLIENT commands said.

    Keeps the id (log lines of one TCP connection stay together) and what
    describes the transport (TLS); every other note starts afresh.
    """
    attributes = dict(old.notes.get("xclient", {}), **given)

    def address(ip_name: str, port_name: str, ip: str, port: int) -> tuple:
        if ip_name in attributes:
            ip = _known(attributes, ip_name) or ""
        if port_name in attributes:
            port = int(_known(attributes, port_name) or 0)
        return ip, port

    remote_ip, remote_port = address("ADDR", "PORT", old.remote_ip, old.remote_port)
    local_ip, local_port = address("DESTADDR", "DESTPORT", old.local_ip, old.local_port)
    # A new address without a name has none: the proxy's name would be wrong for it.
    host = _known(attributes, "NAME") if "NAME" in attributes or "ADDR" in attributes else old.remote_host
    connection = Connection(remote_ip, remote_port, local_ip, local_port, remote_host=host)
    connection.id, connection.started = old.id, old.started
    connection.notes.update((key, old.notes[key]) for key in _TRANSPORT_NOTES if key in old.notes)
    connection.notes["xclient"] = attributes
    return connection


class XclientCommands:
    """The XCLIENT and XFORWARD verbs, mixed into ``Session``."""

    _xclient_peer: Optional[str] = None  # the proxy's own address, once it has renamed the client

    def xclient_allowed(self) -> bool:
        """True when the peer (the proxy, not the client it named) is in ``xclient_hosts``."""
        peer = self._xclient_peer or self.connection.remote_ip
        return ip_in(peer, self.config_list("xclient_hosts"))

    def xclient_helo(self) -> Optional[str]:
        """The client's HELO name as XCLIENT gave it: it, not the proxy's own EHLO, is what hooks judge."""
        return _known(self.connection.notes.get("xclient", {}), "HELO")

    def smtp_xclient(self, rest: str) -> None:
        new = self._client_named("XCLIENT", rest, ATTRIBUTES)
        if new is None:
            return
        self.restart(new)
        login = _known(new.notes["xclient"], "LOGIN")
        if login and not self.closed:  # the proxy authenticated the client (Postfix: permit_sasl_authenticated)
            self.auth_user, self.auth_mechanism = login, "XCLIENT"
            new.relay_client = True

    def smtp_xforward(self, rest: str) -> None:
        new = self._client_named("XFORWARD", rest, XFORWARD_ATTRIBUTES)
        if new is None:
            return
        old = self.connection
        new.hello, new.hello_host = old.hello, _known(new.notes["xclient"], "HELO") or old.hello_host

        def hello_again() -> None:
            # The proxy said EHLO for itself; the hooks judge the client (and its HELO name) now.
            if new.hello and self.answer(new.hello, self.run_hooks(new.hello, new.hello_host)):
                return
            self.reply(R.XFORWARD_OK)
        self.restart(new, hello_again)

    def _client_named(self, verb: str, rest: str, names: Sequence[str]) -> Optional[Connection]:
        """The connection ``verb``'s attributes describe, or None once the peer has been told why not."""
        if not self.xclient_allowed():
            self.reply(R.XCLIENT_REFUSED, verb=verb)
            return None
        if self._transaction is not None and self._transaction.sender is not None:
            self.reply(R.XCLIENT_IN_TRANSACTION, verb=verb)
            return None
        try:
            attributes = parse_xclient(rest, names, verb)
        except ParseError as exc:
            self.respond(501, str(exc), status="5.5.4")
            return None
        old = self.connection
        self._xclient_peer = self._xclient_peer or old.remote_ip
        new = client_connection(old, attributes)
        self.log(LOGINFO, "%s from %s: client is %s [%s]:%s (was %s [%s]:%s)"
                 % (verb, self._xclient_peer, new.remote_host, new.remote_ip, new.remote_port,
                    old.remote_host, old.remote_ip, old.remote_port))
        return new
