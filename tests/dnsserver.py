"""A small authoritative DNS server for tests: zone text in, real UDP and TCP answers on 127.0.0.1 out.

It can hold back the answers for chosen names (``delay``), answer SERVFAIL
for others (``servfail``), and counts every question it gets (``queries``).
A UDP answer larger than 512 bytes is sent truncated, so the client retries
over TCP, as with a real server.
"""
import socket
import socketserver
import struct
import threading
import time
from collections import Counter
from typing import Dict, Iterable, Optional, Tuple

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.zone

UDP_LIMIT = 512


class DNSServer:
    """Serve ``zones`` ({origin: zone file text}) on ``host``:``port`` (UDP and TCP, a free port when 0)."""

    def __init__(self, zones: Dict[str, str], port: int = 0, host: str = "127.0.0.1") -> None:
        self.host = host
        self.zones = [dns.zone.from_text(text, origin, relativize=False) for origin, text in zones.items()]
        self.delay: Dict[str, float] = {}  # name suffix -> seconds to wait before answering
        self.servfail: set = set()  # names answered SERVFAIL
        self.queries: Counter = Counter()  # (name, type) -> questions received
        self._lock = threading.Lock()
        handler = self._handler()
        self._udp = socketserver.ThreadingUDPServer((host, port), handler.udp)
        self.port = self._udp.server_address[1]
        self._tcp = socketserver.ThreadingTCPServer((host, self.port), handler.tcp, bind_and_activate=False)
        self._tcp.allow_reuse_address = True
        self._tcp.server_bind()
        self._tcp.server_activate()
        for server in (self._udp, self._tcp):
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()

    @property
    def address(self) -> Tuple[str, int]:
        return self.host, self.port

    def add_zone(self, origin: str, records: Iterable[str]) -> None:
        """Serve one more zone from now on (a test's own records under an origin no other test uses)."""
        zone = dns.zone.from_text(zone_text(records), origin, relativize=False)
        with self._lock:
            self.zones = [z for z in self.zones if z.origin != zone.origin] + [zone]

    def count(self, name: str, rdtype: str) -> int:
        return self.queries[(name.rstrip(".").lower(), rdtype)]

    def close(self) -> None:
        for server in (self._udp, self._tcp):
            server.shutdown()
            server.server_close()

    # -- answering ---------------------------------------------------------------
    def answer(self, wire: bytes) -> Tuple[Optional[dns.message.Message], float]:
        """The response to a query and how long to wait before sending it; None for garbage."""
        try:
            query = dns.message.from_wire(wire)
            question = query.question[0]
        except Exception:
            return None, 0
        qname = question.name
        text = qname.to_text(omit_final_dot=True).lower()
        with self._lock:
            self.queries[(text, dns.rdatatype.to_text(question.rdtype))] += 1
        delay = max((s for suffix, s in self.delay.items() if text == suffix or text.endswith("." + suffix)), default=0)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        # The deepest zone that holds the name wins, as delegation would make it.
        zone = max((z for z in self.zones if qname.is_subdomain(z.origin)), key=lambda z: len(z.origin), default=None)
        if text in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif zone is None:
            response.set_rcode(dns.rcode.REFUSED)
        else:
            node = zone.get_node(qname) or self._wildcard(zone, qname)
            rdataset = node and node.get_rdataset(dns.rdataclass.IN, question.rdtype)
            if rdataset:
                response.answer.append(_rrset(qname, rdataset))
            else:
                if node is None:
                    response.set_rcode(dns.rcode.NXDOMAIN)
                soa = zone.find_rdataset(zone.origin, "SOA")
                response.authority.append(_rrset(zone.origin, soa))
        return response, delay

    @staticmethod
    def _wildcard(zone: dns.zone.Zone, qname: dns.name.Name):
        """The ``*.parent`` node that covers ``qname``, if any (no name under it may exist)."""
        name = qname
        while name != zone.origin and name != dns.name.root:
            name = name.parent()
            node = zone.get_node(dns.name.Name((b"*",) + name.labels))
            if node is not None:
                return node
        return None

    def _handler(self):
        server = self

        class UDP(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                response, delay = server.answer(data)
                if response is None:
                    return
                time.sleep(delay)
                wire = response.to_wire()
                if len(wire) > UDP_LIMIT:
                    response.answer.clear()
                    response.flags |= dns.flags.TC
                    wire = response.to_wire()
                try:
                    sock.sendto(wire, self.client_address)
                except OSError:
                    pass  # a delayed answer after close(): the run is over

        class TCP(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.settimeout(10)
                try:
                    while True:
                        head = self.request.recv(2, socket.MSG_WAITALL)
                        if len(head) < 2:
                            return
                        data = self.request.recv(struct.unpack("!H", head)[0], socket.MSG_WAITALL)
                        response, delay = server.answer(data)
                        if response is None:
                            return
                        time.sleep(delay)
                        wire = response.to_wire()
                        self.request.sendall(struct.pack("!H", len(wire)) + wire)
                except OSError:
                    return

        return type("Handlers", (), {"udp": UDP, "tcp": TCP})


def _rrset(name: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(name, rdataset.rdclass, rdataset.rdtype)
    rrset.update(rdataset)
    return rrset


def zone_text(records: Iterable[str], ttl: int = 300) -> str:
    """Zone file text: records without a TTL of their own get ``ttl`` (``$TTL``: NSD and BIND do not carry the
    last TTL on as dnspython does), negative answers are cached as long (the SOA), then NS and ``records``."""
    return "\n".join(["$TTL %d" % ttl, "@ %d IN SOA ns.test. hostmaster.test. 1 3600 600 86400 %d" % (ttl, ttl),
                      "@ %d IN NS ns.test." % ttl, *records]) + "\n"
