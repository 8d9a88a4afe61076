"""The shared resolver (qpgevent/dns.py) against a real DNS server on 127.0.0.1 (tests/dnsserver.py)."""
import smtplib
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import dns.message
import dns.rcode
import dns.rrset
import pytest

from qpgevent.dns import Resolver, Status, reverse_name
from qpgevent.errors import ConfigErrors
from qpgevent.testing import make_smtpd


@pytest.fixture
def resolver(dns_server):
    """A fresh resolver (empty cache) asking only the test server, with a short timeout."""
    return Resolver([dns_server.address], timeout=1.5)


def test_each_record_type(resolver):
    assert sorted(resolver.a("host.test").records) == ["192.0.2.1", "192.0.2.2"]
    assert resolver.aaaa("host.test").records == ("2001:db8::1",)
    assert resolver.mx("mail.test").records == ((10, "mx1.test"), (20, "mx2.test"))
    assert sorted(resolver.txt("text.test").records) == ["two parts", "v=spf1 -all"]
    assert resolver.ptr("192.0.2.1").records == ("host.test",)
    assert resolver.ptr("2001:db8::1").records == ("host.test",)
    assert resolver.a("host.test").status is Status.ANSWER and resolver.a("host.test").found


def test_an_answer_too_big_for_udp_comes_over_tcp(resolver, dns_server):
    """The server truncates a UDP answer over 512 bytes; the resolver asks again over TCP and gets it whole."""
    records = resolver.txt("big.test").records
    assert sorted(records) == ["x" * 250 + "y" * 250, "z" * 200]


def test_nxdomain_nodata_servfail_and_timeout_are_told_apart(resolver):
    outcomes = {name: resolver.a(name) for name in ("nosuch.test", "text.test", "broken.test", "timeout.test")}
    assert {name: result.status for name, result in outcomes.items()} == {
        "nosuch.test": Status.NXDOMAIN, "text.test": Status.NODATA,
        "broken.test": Status.SERVFAIL, "timeout.test": Status.TIMEOUT}
    assert [name for name, result in outcomes.items() if result.temporary] == ["broken.test", "timeout.test"]
    assert all(result.records == () and not result.found for result in outcomes.values())


def test_a_lookup_is_bounded_by_dns_timeout(resolver):
    started = time.monotonic()
    assert resolver.a("timeout.test").status is Status.TIMEOUT
    assert 1.4 <= time.monotonic() - started < 2.5


def test_a_malformed_name_is_nxdomain_not_an_exception(resolver):
    assert resolver.a("a..test").status is Status.NXDOMAIN
    assert resolver.a("x" * 64 + ".test").status is Status.NXDOMAIN


def test_the_cache_answers_a_second_lookup_without_asking(resolver, dns_server):
    for name, rdtype in (("host.test", "A"), ("cached-nx.test", "A"), ("text.test", "MX")):
        first = resolver.lookup(name, rdtype)
        before = dns_server.count(name, rdtype)
        assert resolver.lookup(name, rdtype) == first
        assert dns_server.count(name, rdtype) == before >= 1, (name, rdtype)


def test_lookup_many_asks_only_for_what_is_not_cached(resolver, dns_server):
    """A dnsbl miss (NXDOMAIN) and a hit are both kept for their TTL: a second batch asks the server nothing."""
    queries = [("host.test", "A"), ("batch-nx-1.test", "A"), ("batch-nx-2.test", "TXT"), ("mail.test", "MX")]
    first = resolver.lookup_many(queries)
    asked = [dns_server.count(name, rdtype) for name, rdtype in queries]
    assert [r.status for r in first] == [Status.ANSWER, Status.NXDOMAIN, Status.NXDOMAIN, Status.ANSWER]
    assert resolver.lookup_many(queries + [("HOST.test.", "A")]) == first + [first[0]._replace(name="HOST.test.")]
    assert [dns_server.count(name, rdtype) for name, rdtype in queries] == asked


def test_temporary_failures_are_not_cached(resolver, dns_server):
    asked = dns_server.count("broken.test", "A")
    assert resolver.a("broken.test").status is Status.SERVFAIL
    assert resolver.a("broken.test").status is Status.SERVFAIL
    assert dns_server.count("broken.test", "A") > asked + 1


def test_the_cache_honours_the_ttl(resolver, dns_server):
    """``short.test`` has a TTL of 1 s: asked again after it, the server is asked again."""
    resolver.a("short.test")
    resolver.a("short.test")
    asked = dns_server.count("short.test", "A")
    time.sleep(1.1)
    assert resolver.a("short.test").records == ("192.0.2.9",)
    assert dns_server.count("short.test", "A") == asked + 1


def test_reverse_names():
    assert reverse_name("192.0.2.7") == "7.2.0.192.in-addr.arpa"
    assert reverse_name("2001:db8::1") == "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
    with pytest.raises(ValueError):
        reverse_name("not-an-ip")


def test_lookup_many_runs_the_lookups_at_once(resolver):
    """Five one-second lookups (no gevent in this process: threads) take about one second, results in order."""
    queries = [("z%d.slow.test" % i, "A") for i in range(5)] + [("nosuch.test", "A")]
    started = time.monotonic()
    results = resolver.lookup_many(queries)
    assert time.monotonic() - started < 2.5
    assert [(r.name, r.status) for r in results] == [(name, Status.ANSWER) for name, _ in queries[:5]] + [
        ("nosuch.test", Status.NXDOMAIN)]


def test_dns_servers_and_dns_timeout_are_read_from_config(tmp_path, dns_server):
    smtpd = make_smtpd(tmp_path, config={"dns_servers": ["# the test server", "127.0.0.1:%d" % dns_server.port],
                                         "dns_timeout": "0.5"})
    assert smtpd.dns.timeout == 0.5
    assert smtpd.dns.a("host.test").found


def test_dns_timeout_is_capped_by_plugin_timeout(tmp_path):
    smtpd = make_smtpd(tmp_path, config={"dns_servers": "127.0.0.1", "plugin_timeout": "2"})
    assert smtpd.dns.timeout == 2


def test_without_dns_servers_the_system_configuration_is_used(tmp_path):
    assert make_smtpd(tmp_path).dns.timeout == 5


def test_bad_dns_servers_and_dns_timeout_are_start_up_errors_naming_file_and_line(tmp_path):
    lines = ["192.0.2.53", "[2001:db8::53]:5353", "2001:db8::54", "ns.example.com", "192.0.2.53:dns",
             "192.0.2.53:70000"]
    with pytest.raises(ConfigErrors) as caught:
        make_smtpd(tmp_path, config={"dns_servers": lines, "dns_timeout": "soon"})
    path = str(tmp_path / "config" / "dns_servers")
    located = [(e.path, e.line) for e in caught.value.errors]
    assert located == [(path, 4), (path, 5), (path, 6), (str(tmp_path / "config" / "dns_timeout"), 1)]
    assert "ns.example.com" in str(caught.value.errors[0]) and "IP:PORT" in str(caught.value.errors[0])


LOOKUP_RCPT = '''"""lookup_rcpt: look up <local part>.slow.test; accept the recipient only if it resolves."""
from qpgevent import DECLINED, DENY, DENYSOFT


def hook_rcpt(self, transaction, recipient, **params):
    result = self.smtpd.dns.a(recipient.user + ".slow.test")
    if result.found:
        return DECLINED
    return (DENYSOFT if result.temporary else DENY), "lookup: %s" % result.status.value
'''


def test_two_hundred_sessions_waiting_on_slow_dns_run_concurrently(live_server, tmp_path, dns_server):
    """200 clients whose RCPT waits on a 1-second DNS answer (each its own name) finish in far less than 200 s."""
    server = live_server(plugins=["lookup_rcpt", "rcpt_ok", "queue/discard"],
                         config={"dns_servers": "127.0.0.1:%d" % dns_server.port},
                         plugin_files={"lookup_rcpt.py": LOOKUP_RCPT}, args=["-c", "500"])

    def session(i):
        with smtplib.SMTP(*server.address, timeout=30) as client:
            client.ehlo("client%d.test" % i)
            client.mail("a%d@sender.test" % i)
            started = time.monotonic()
            code = client.rcpt("u%d@example.com" % i)[0]
            return code, time.monotonic() - started

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=200) as pool:
        results = list(pool.map(session, range(200)))
    elapsed = time.monotonic() - started
    assert [code for code, _ in results] == [250] * 200
    assert min(waited for _, waited in results) >= 0.9  # every RCPT really waited on the DNS server
    assert dns_server.count("u0.slow.test", "A") >= 1
    # One after another they would take 200 s; the margin is for a loaded 2-core machine.
    assert elapsed < 60, "200 one-second lookups took %.1f s: sessions are not concurrent" % elapsed


MANY_RCPT = '''"""many_rcpt: look up ten slow names and one missing at once; refuse for good only on NXDOMAIN of them all."""
from qpgevent import DECLINED, DENY, DENYSOFT


def hook_rcpt(self, transaction, recipient, **params):
    if recipient.user == "late":
        result = self.smtpd.dns.a("timeout.test")
        return (DENYSOFT if result.temporary else DENY), "late: %s" % result.status.value
    names = ["m%d.slow.test" % i for i in range(10)] + ["nosuch.test"]
    results = self.smtpd.dns.lookup_many((name, "A") for name in names)
    return DENY, " ".join(result.status.value for result in results)
'''


def test_lookup_many_in_a_hook_and_a_timeout_is_temporary(live_server, dns_server):
    """Under the server, ten one-second lookups in one hook take about a second (greenlets); a lookup
    cut short by dns_timeout is a 4xx, never a 5xx or an accept."""
    server = live_server(plugins=["many_rcpt", "rcpt_ok", "queue/discard"],
                         config={"dns_servers": "127.0.0.1:%d" % dns_server.port, "dns_timeout": "1.5"},
                         plugin_files={"many_rcpt.py": MANY_RCPT})
    with smtplib.SMTP(*server.address, timeout=30) as client:
        client.ehlo("client.test")
        client.mail("a@sender.test")
        started = time.monotonic()
        code, text = client.rcpt("many@example.com")
        assert time.monotonic() - started < 2.5
        assert (code, text.decode()) == (550, "5.7.1 " + " ".join(["answer"] * 10 + ["nxdomain"]))
        started = time.monotonic()
        code, text = client.rcpt("late@example.com")
        assert 1.4 < time.monotonic() - started < 2.5
        assert code == 450 and text.decode().endswith("late: timeout")


def test_without_any_server_a_lookup_is_temporary():
    """No dns_servers and none in /etc/resolv.conf: the server starts, and every lookup is a temporary SERVFAIL."""
    result = Resolver([], 1.0).a("example.com")
    assert result.status is Status.SERVFAIL and result.temporary


class Responder:
    """A one-socket UDP 'server' on 127.0.0.1 whose ``reply(query, wire, client)`` sends what a test wants."""

    def __init__(self, reply):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.address = self.sock.getsockname()
        self.clients = []  # (source address, query id) of every query received
        self._reply = reply
        self._running = True
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while self._running:
            try:
                wire, client = self.sock.recvfrom(65535)
            except OSError:
                continue
            query = dns.message.from_wire(wire)
            self.clients.append((client, query.id))
            self._reply(self, query, client)

    def send(self, message, client):
        self.sock.sendto(message.to_wire(), client)

    def close(self):
        self._running = False
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def responder():
    started = []
    yield lambda reply: started.append(Responder(reply)) or started[-1]
    for one in started:
        one.close()


def _answer(query, name=None, address="192.0.2.1"):
    """A response to ``query`` giving ``address`` (for ``name``: another question, if given)."""
    if name is not None:
        query = dns.message.make_query(name, "A", id=query.id)
    response = dns.message.make_response(query)
    response.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A", address))
    return response


def _spoofs(responder, query, client):
    """The forgeries an off-path attacker could send: another id, another question, another source address."""
    wrong_id = _answer(query, address="192.0.2.66")
    wrong_id.id ^= 0x5A5A
    responder.send(wrong_id, client)
    responder.send(_answer(query, name="other.spoof.test", address="192.0.2.67"), client)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind(("127.0.0.2", responder.address[1]))  # the server's port, another address
        other.sendto(_answer(query, address="192.0.2.68").to_wire(), client)
    time.sleep(0.1)


def test_forged_responses_are_ignored_and_the_real_one_taken(responder):
    """RFC 5452: a response with another id or question, or from another address, is not an answer."""
    def reply(server, query, client):
        _spoofs(server, query, client)
        server.send(_answer(query), client)

    server = responder(reply)
    assert Resolver([server.address], timeout=2).a("host.spoof.test").records == ("192.0.2.1",)


def test_only_forged_responses_are_a_timeout(responder):
    server = responder(_spoofs)
    started = time.monotonic()
    assert Resolver([server.address], timeout=1).a("host.spoof.test").status is Status.TIMEOUT
    assert 0.9 <= time.monotonic() - started < 1.6


def test_a_silent_server_is_a_timeout_within_the_bound(responder):
    server = responder(lambda *args: None)
    started = time.monotonic()
    assert Resolver([server.address], timeout=0.8).mx("silent.test").status is Status.TIMEOUT
    assert 0.7 <= time.monotonic() - started < 1.4


def test_ids_and_source_ports_are_random(responder):
    server = responder(lambda server, query, client: server.send(_answer(query), client))
    resolver = Resolver([server.address], timeout=2)
    for i in range(12):
        assert resolver.a("n%d.random.test" % i).found
    assert len({port for (_, port), _ in server.clients}) >= 10 and len({qid for _, qid in server.clients}) >= 10


@pytest.mark.parametrize("failure", ["refused", "servfail", "garbage", "silent"])
def test_the_next_server_is_asked_when_one_fails(responder, dns_server, failure):
    """A server that refuses, fails, answers garbage or stays silent (its share of the time) -> the next one."""
    def reply(server, query, client):
        response = dns.message.make_response(query)
        if failure == "garbage":
            server.sock.sendto(response.to_wire()[:14], client)  # the question cut short: ignored
            asked = response.question[0].name.to_wire() + b"\x00\x01\x00\x01"
            server.sock.sendto(response.to_wire()[:6] + b"\x00\x01\x00\x00\x00\x00" + asked + b"\xc0",
                               client)  # our question, then a record announced and cut short
        elif failure != "silent":
            response.set_rcode(dns.rcode.REFUSED if failure == "refused" else dns.rcode.SERVFAIL)
            server.send(response, client)

    first = responder(reply)
    started = time.monotonic()
    result = Resolver([first.address, dns_server.address], timeout=2).a("host.test")
    assert sorted(result.records) == ["192.0.2.1", "192.0.2.2"] and len(first.clients) == 1
    assert time.monotonic() - started < (1.5 if failure == "silent" else 0.5)


def test_an_idna_name_is_asked_in_its_ascii_form(resolver, dns_server):
    dns_server.add_zone("dns-idna.example.", ["xn--bcher-kva 300 IN A 192.0.2.44"])
    assert resolver.a("bücher.dns-idna.example").records == ("192.0.2.44",)


def test_a_server_without_edns_is_asked_again_without_it(responder):
    """RFC 6891 7: FORMERR to a query with an OPT record -> the same question without one."""
    def reply(server, query, client):
        if query.edns >= 0:
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.FORMERR)
            server.send(response, client)
        else:
            server.send(_answer(query), client)

    server = responder(reply)
    assert Resolver([server.address], timeout=2).a("old.test").records == ("192.0.2.1",)
    assert len(server.clients) == 2
