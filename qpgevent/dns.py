"""The one DNS resolver of a process: cached, cooperative, bounded, for every plugin.

Built on dnspython's blocking API, which only pauses the calling session
under the server's gevent monkey-patching.  Plugins reach it as
``self.smtpd.dns`` (see docs/writing-plugins.md).
"""
import enum
import ipaddress
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.reversename

from .config import Config
from .errors import ConfigError
from .netlist import host_port

DEFAULT_TIMEOUT = 5.0
CACHE_SIZE = 10000  # answers kept per process; the least recently used go first
TYPES = ("A", "AAAA", "MX", "TXT", "PTR")


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


def _record(rdtype: str, rdata: Any) -> Any:
    if rdtype in ("A", "AAAA"):
        return rdata.address
    if rdtype == "MX":
        return rdata.preference, rdata.exchange.to_text(omit_final_dot=True)
    if rdtype == "TXT":
        return b"".join(rdata.strings).decode("utf-8", "replace")
    return rdata.target.to_text(omit_final_dot=True)  # PTR


class Resolver:
    """Lookups of A, AAAA, MX, TXT and PTR records, each bounded by ``timeout`` seconds.

    ``servers``: (ip, port) pairs; None reads the system's /etc/resolv.conf
    (dns.resolver.NoResolverConfiguration if it lists no server).  Answers,
    NXDOMAIN and NODATA are cached for their TTL (negative ones for the
    SOA's), at most CACHE_SIZE of them.
    """

    def __init__(self, servers: Optional[Sequence[Tuple[str, int]]] = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout
        self._resolver = dns.resolver.Resolver(configure=servers is None)
        if servers is not None:
            self._resolver.nameservers = [dns.nameserver.Do53Nameserver(ip, port) for ip, port in servers]
        # One try per server within the whole lookup's time, not `timeout` per server.
        self._resolver.lifetime = timeout
        self._resolver.cache = dns.resolver.LRUCache(CACHE_SIZE)
        # Our own results by (name, type), for their TTL: a cached answer costs a dict lookup, not
        # dnspython's name parsing and resolution objects (most of a filter chain's DNS cost).
        self._results: "OrderedDict[Tuple[str, str], Tuple[float, Result]]" = OrderedDict()

    def describe(self) -> str:
        """The servers asked and the time allowed, for --check-config."""
        resolver = self._resolver
        # The system configuration gives addresses as text, config/dns_servers gives Do53Nameservers.
        pairs = [(server, resolver.port) if isinstance(server, str) else (server.address, server.port)
                 for server in resolver.nameservers]
        servers = ", ".join(("[%s]:%d" if ":" in ip else "%s:%d") % (ip, port) for ip, port in pairs)
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
        try:
            answer = self._resolver.resolve(name, rdtype, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as exc:
            return self._keep(Result(name, rdtype, Status.NXDOMAIN), _negative_ttl(exc))
        except (dns.name.NameTooLong, dns.name.EmptyLabel, dns.name.LabelTooLong):
            return Result(name, rdtype, Status.NXDOMAIN)
        except dns.exception.Timeout:
            return Result(name, rdtype, Status.TIMEOUT)
        except dns.exception.DNSException:  # NoNameservers (every server failed or refused), YXDOMAIN, ...
            return Result(name, rdtype, Status.SERVFAIL)
        ttl = answer.expiration - time.time()
        if answer.rrset is None:
            return self._keep(Result(name, rdtype, Status.NODATA), ttl)
        records = [_record(rdtype, rdata) for rdata in answer.rrset]
        return self._keep(Result(name, rdtype, Status.ANSWER, tuple(sorted(records) if rdtype == "MX" else records)),
                          ttl)

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


def _negative_ttl(exc: dns.resolver.NXDOMAIN) -> float:
    """How long an NXDOMAIN may be cached (RFC 2308 5: the SOA's TTL, capped by its minimum); 0 without an SOA."""
    for response in exc.responses().values():
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.SOA:
                return min(rrset.ttl, rrset[0].minimum)
    return 0


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
