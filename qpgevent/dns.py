"""The one DNS resolver of a process: cached, cooperative, bounded, for every plugin.

A stub resolver over plain blocking sockets, which only pause the calling
session under the server's gevent monkey-patching; the messages are built
and read by qpgevent/dnswire.py.  dnspython serves only what is off the hot
path: /etc/resolv.conf, non-ASCII (IDNA) names and reverse names.  Plugins
reach it as ``self.smtpd.dns`` (see docs/writing-plugins.md).
"""
import enum
import ipaddress
import random
import socket
import struct
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import dns.exception
import dns.name
import dns.resolver
import dns.reversename

from . import dnswire
from .config import Config
from .errors import ConfigError
from .netlist import host_port

DEFAULT_TIMEOUT = 5.0
CACHE_SIZE = 10000  # answers kept per process; the least recently used go first
TYPES = tuple(dnswire.TYPE_CODES)
_ids = random.SystemRandom()  # query ids unpredictable to an off-path spoofer (RFC 5452)


class Status(enum.Enum):
    """How a lookup ended.  SERVFAIL and TIMEOUT are temporary: answer 4xx, never accept or 5xx on them."""

    ANSWER = "answer"
    NXDOMAIN = "nxdomain"  # the name does not exist (or cannot: a malformed name)
    NODATA = "nodata"  # the name exists, with no record of this type
    SERVFAIL = "servfail"  # no server gave an answer (SERVFAIL, REFUSED, ...)
    TIMEOUT = "timeout"  # no answer within dns_timeout


class Result(NamedTuple):
    """A lookup's outcome; ``records`` is empty unless ``status`` is ANSWER.

    Records by type: A and AAAA an address string; MX ``(preference,
    exchange)`` sorted by preference; TXT the record's strings joined (UTF-8,
    bad bytes replaced); PTR a host name.  Names have no trailing dot.
    """

    name: str
    rdtype: str
    status: Status
    records: Tuple[Any, ...] = ()

    @property
    def found(self) -> bool:
        return self.status is Status.ANSWER

    @property
    def temporary(self) -> bool:
        """True when the outcome says nothing about the name: try again later (4xx)."""
        return self.status in (Status.SERVFAIL, Status.TIMEOUT)


def reverse_name(ip: str) -> str:
    """``192.0.2.7`` -> ``7.2.0.192.in-addr.arpa``; IPv6 by nibbles under ``ip6.arpa``.  ValueError if no address."""
    return dns.reversename.from_address(str(ipaddress.ip_address(ip))).to_text(omit_final_dot=True)


class Resolver:
    """Lookups of A, AAAA, MX, TXT and PTR records, each bounded by ``timeout`` seconds.

    ``servers``: (ip, port) pairs; None reads the system's /etc/resolv.conf
    (dns.resolver.NoResolverConfiguration if it lists no server).  Answers,
    NXDOMAIN and NODATA are cached for their TTL (negative ones for the
    SOA's), at most CACHE_SIZE of them.
    """

    def __init__(self, servers: Optional[Sequence[Tuple[str, int]]] = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout
        if servers is None:
            system = dns.resolver.Resolver()
            # Plain addresses (resolv.conf) or Do53Nameservers, by dnspython's version; no DoH/DoT there.
            servers = [(server, system.port) if isinstance(server, str) else (server.address, server.port)
                       for server in system.nameservers if isinstance(server, str) or hasattr(server, "address")]
        self._servers = list(servers)
        # Our own results by (name, type), for their TTL: a cached answer costs a dict lookup.
        self._results: "OrderedDict[Tuple[str, str], Tuple[float, Result]]" = OrderedDict()

    def describe(self) -> str:
        """The servers asked and the time allowed, for --check-config."""
        servers = ", ".join(("[%s]:%d" if ":" in ip else "%s:%d") % (ip, port) for ip, port in self._servers)
        return "%s (timeout %gs)" % (servers or "none", self.timeout)

    def lookup(self, name: str, rdtype: str) -> Result:
        """Look up ``rdtype`` (one of TYPES) records of ``name``; never raises for what the DNS answers."""
        if rdtype not in TYPES:
            raise ValueError("unsupported record type %r" % rdtype)
        return self._cached(name, rdtype) or self._ask(name, rdtype)

    def _cached(self, name: str, rdtype: str) -> Optional[Result]:
        key = (name.lower().rstrip("."), rdtype)
        entry = self._results.get(key)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            self._results.pop(key, None)
            return None
        return entry[1]._replace(name=name)

    def _keep(self, result: Result, ttl: float) -> Result:
        if ttl > 0:
            self._results[(result.name.lower().rstrip("."), result.rdtype)] = (time.monotonic() + ttl, result)
            if len(self._results) > CACHE_SIZE:
                self._results.popitem(last=False)
        return result

    def _ask(self, name: str, rdtype: str) -> Result:
        """Ask each server in turn, within ``timeout`` seconds in all, until one answers."""
        try:
            asked = dnswire.question(_wire_name(name), rdtype)
        except (ValueError, dns.name.NameTooLong, dns.name.EmptyLabel, dns.name.LabelTooLong):
            return Result(name, rdtype, Status.NXDOMAIN)  # a malformed name cannot exist
        except dns.exception.DNSException:  # an IDNA error, a bad escape
            return Result(name, rdtype, Status.SERVFAIL)
        deadline = time.monotonic() + self.timeout
        silent = False
        for left in range(len(self._servers), 0, -1):
            # A silent server may take only its share of the time left, so that every server gets a try.
            wait = (deadline - time.monotonic()) / left
            if wait <= 0:
                break
            try:
                response = _query(self._servers[-left], asked, wait)
            except TimeoutError:
                silent = True
                continue
            except (OSError, dnswire.ParseError):  # refused port, unreachable, malformed: the next server
                continue
            if response.rcode == dnswire.NXDOMAIN:
                return self._keep(Result(name, rdtype, Status.NXDOMAIN), response.ttl)
            if response.rcode == dnswire.NOERROR:
                if not response.records:
                    return self._keep(Result(name, rdtype, Status.NODATA), response.ttl)
                records = tuple(sorted(response.records)) if rdtype == "MX" else response.records
                return self._keep(Result(name, rdtype, Status.ANSWER, records), response.ttl)
            # SERVFAIL, REFUSED, NOTIMP, ...: the next server
        return Result(name, rdtype, Status.TIMEOUT if silent or time.monotonic() >= deadline else Status.SERVFAIL)

    def a(self, name: str) -> Result:
        return self.lookup(name, "A")

    def aaaa(self, name: str) -> Result:
        return self.lookup(name, "AAAA")

    def mx(self, name: str) -> Result:
        return self.lookup(name, "MX")

    def txt(self, name: str) -> Result:
        return self.lookup(name, "TXT")

    def ptr(self, ip: str) -> Result:
        """The PTR records of ``ip``'s reverse name (an IPv4 or IPv6 address)."""
        return self.lookup(reverse_name(ip), "PTR")

    def lookup_many(self, queries: Iterable[Tuple[str, str]]) -> List[Result]:
        """Look up every ``(name, rdtype)`` at once; the results in the queries' order.

        For dnsbl zones: the whole batch takes about as long as its slowest
        lookup.  Under the server (gevent monkey-patched) each lookup runs in
        a greenlet, all killed if the hook is interrupted (plugin_timeout);
        without monkey-patching (unit tests, scripts) in threads.
        """
        queries = list(queries)
        for name, rdtype in queries:
            if rdtype not in TYPES:
                raise ValueError("unsupported record type %r" % rdtype)
        results = [self._cached(name, rdtype) for name, rdtype in queries]
        missing = [i for i, result in enumerate(results) if result is None]
        if len(missing) == 1:
            results[missing[0]] = self._ask(*queries[missing[0]])
        elif missing and _gevent_patched():
            import gevent
            greenlets = [gevent.spawn(self._ask, *queries[i]) for i in missing]
            try:
                gevent.joinall(greenlets, raise_error=True)
                for i, greenlet in zip(missing, greenlets):
                    results[i] = greenlet.value
            finally:
                gevent.killall(greenlets)
        elif missing:
            with ThreadPoolExecutor(max_workers=min(len(missing), 32)) as pool:
                for i, result in zip(missing, pool.map(lambda i: self._ask(*queries[i]), missing)):
                    results[i] = result
        return results


def _wire_name(name: str) -> bytes:
    """``name`` in wire form: ASCII straight, anything else (IDNA, escapes) through dnspython."""
    if name.isascii() and "\\" not in name:
        return dnswire.encode_name(name)
    return dns.name.from_text(name).to_wire()


def _query(server: Tuple[str, int], asked: bytes, wait: float) -> dnswire.Response:
    """One server's response to the ``asked`` question within ``wait`` seconds; over TCP when truncated.

    TimeoutError if it stays silent, OSError or dnswire.ParseError if it fails.
    """
    deadline = time.monotonic() + wait
    qid = _ids.getrandbits(16)
    response = _udp(server, dnswire.make_query(qid, asked), qid, asked, deadline)
    if response.rcode == dnswire.FORMERR:  # RFC 6891 7: a server that knows no EDNS, asked again without it
        response = _udp(server, dnswire.make_query(qid, asked, edns=False), qid, asked, deadline)
    if response.truncated:
        response = _tcp(server, dnswire.make_query(qid, asked), qid, asked, deadline)
    return response


def _udp(server: Tuple[str, int], query: bytes, qid: int, asked: bytes, deadline: float) -> dnswire.Response:
    # A fresh socket each time: the OS picks a new random source port (RFC 5452); connected, so the
    # kernel drops datagrams from any other address than the server asked.
    with socket.socket(socket.AF_INET6 if ":" in server[0] else socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(server)
        sock.send(query)
        while True:
            _settimeout(sock, deadline)
            wire = sock.recv(65535)
            if dnswire.answers(wire, qid, asked):
                return dnswire.parse(wire, asked)
            # Another id or question: a spoofing attempt or a late answer to an earlier query; ignored.


def _tcp(server: Tuple[str, int], query: bytes, qid: int, asked: bytes, deadline: float) -> dnswire.Response:
    with socket.socket(socket.AF_INET6 if ":" in server[0] else socket.AF_INET, socket.SOCK_STREAM) as sock:
        _settimeout(sock, deadline)
        sock.connect(server)
        sock.sendall(struct.pack("!H", len(query)) + query)
        wire = _receive(sock, struct.unpack("!H", _receive(sock, 2, deadline))[0], deadline)
    if not dnswire.answers(wire, qid, asked):
        raise dnswire.ParseError("a TCP response to another question")
    response = dnswire.parse(wire, asked)
    if response.truncated:
        raise dnswire.ParseError("a truncated TCP response")
    return response


def _receive(sock: socket.socket, size: int, deadline: float) -> bytes:
    data = b""
    while len(data) < size:
        _settimeout(sock, deadline)
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise dnswire.ParseError("connection closed within a response")
        data += chunk
    return data


def _settimeout(sock: socket.socket, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    sock.settimeout(left)


def _gevent_patched() -> bool:
    try:
        from gevent import monkey
    except ImportError:
        return False
    return monkey.is_module_patched("socket")


def from_config(config: Config, errors: List[ConfigError], plugin_timeout: float = 0) -> Resolver:
    """The resolver ``config/dns_servers`` and ``config/dns_timeout`` describe; what is wrong goes to ``errors``.

    A lookup never waits longer than ``plugin_timeout`` (when set) either.
    """
    servers = []
    for entry in config.entries("dns_servers"):
        try:
            ip, port = host_port(entry.value, 53)
            ip = str(ipaddress.ip_address(ip))
            if not 0 < port < 65536:
                raise ValueError
            servers.append((ip, port))
        except ValueError:
            errors.append(ConfigError("dns_servers: %r is not IP, IP:PORT or [IPv6]:PORT; write one such address "
                                      "a line" % entry.value, entry.path, entry.line))
    timeout = DEFAULT_TIMEOUT
    for entry in config.entries("dns_timeout")[:1]:
        try:
            timeout = float(entry.value)
            if not timeout > 0:  # also refuses nan
                raise ValueError
        except ValueError:
            errors.append(ConfigError("dns_timeout must be a number of seconds above 0, not %r" % entry.value,
                                      entry.path, entry.line))
            timeout = DEFAULT_TIMEOUT
    if plugin_timeout:
        timeout = min(timeout, plugin_timeout)
    try:
        return Resolver(servers or None, timeout)
    except dns.resolver.NoResolverConfiguration:
        # A server whose plugins look nothing up must still start; a lookup
        # with no server to ask is SERVFAIL, a temporary answer (4xx).
        return Resolver([], timeout)
