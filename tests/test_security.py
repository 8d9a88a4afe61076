"""Hostile clients over real sockets: SMTP smuggling, endless lines, recipient floods, garbage, absurd parameters.

Each attack runs against a live ``bin/qpsmtpd-server`` while a normal client's session is open beside it;
the normal client must still deliver.  STARTTLS injection is in ``tests/plugins/test_tls.py``, AUTH garbage
in ``tests/test_auth.py``.
"""
import contextlib
import email
import itertools
import random
import threading
import time

import pytest

from qpgevent import DENY, OK
from qpgevent.testing import LiveServer, SMUGGLING_VECTORS, RawClient, TestSession, write_config

MB = 1 << 20
DATABYTES = 10 * MB
_markers = itertools.count(1)


def start_server(tmp_path_factory, name, **config):
    root = tmp_path_factory.mktemp(name)
    values = {"me": "mx.test", "rcpthosts": ["example.com"], "spool_dir": str(root / "spool"),
              "plugins": ["rcpt_ok", "queue/maildir %s" % (root / "Maildir")], "loglevel": "4",
              "databytes": str(DATABYTES)}
    values.update(config)
    server = LiveServer(write_config(root / "config", values), cwd=root).start()
    server.maildir = root / "Maildir"
    return server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One live server (default settings: ``bare_newline reject``, ``max_rcpt 100``) for the whole module."""
    server = start_server(tmp_path_factory, "strict")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def normalizing_server(tmp_path_factory):
    """A live server with ``bare_newline normalize``."""
    server = start_server(tmp_path_factory, "normalize", bare_newline="normalize")
    yield server
    server.stop()


def new_marker():
    return "m%d-%d" % (time.monotonic_ns(), next(_markers))


def delivered(server, marker):
    """The Maildir files holding ``marker``."""
    new = server.maildir / "new"
    files = sorted(new.iterdir()) if new.exists() else []
    return [data for data in (path.read_bytes() for path in files) if marker.encode() in data]


def rss_kb(server):
    """The server process's resident memory in kB (/proc/<pid>/status VmRSS)."""
    with open("/proc/%d/status" % server.process.pid) as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class Client(RawClient):
    """A raw client of ``server`` that has read the 220 greeting."""

    def __init__(self, server, timeout=10.0):
        super().__init__(server.address, timeout)
        self.greeting = self.reply()
        assert self.greeting.code == 220


@contextlib.contextmanager
def bystander(server):
    """A normal client whose session spans the attack: greeted and in a transaction before it starts,
    delivering a message once it is over.  Yields a function that runs a whole second delivery at once."""
    marker = new_marker()
    client = Client(server)
    assert client.command("EHLO bystander.test").code == 250
    assert client.command("MAIL FROM:<b@bystander.test>").code == 250
    yield lambda: send_normal_message(server)
    assert client.command("RCPT TO:<u@example.com>").code == 250
    assert client.command("DATA").code == 354
    client.send(b"Subject: %s\r\n\r\nstill served\r\n.\r\n" % marker.encode())
    assert client.reply().code == 250
    client.command("QUIT")
    client.close()
    assert len(delivered(server, marker)) == 1


def send_normal_message(server):
    """One complete delivery on a fresh connection; returns how long it took."""
    marker = new_marker()
    started = time.monotonic()
    client = Client(server)
    for line, code in [("EHLO normal.test", 250), ("MAIL FROM:<n@normal.test>", 250), ("RCPT TO:<u@example.com>", 250),
                       ("DATA", 354)]:
        assert client.command(line).code == code, line
    client.send(b"Subject: %s\r\n\r\nhello\r\n.\r\n" % marker.encode())
    assert client.reply().code == 250
    client.command("QUIT")
    client.close()
    assert len(delivered(server, marker)) == 1
    return time.monotonic() - started


def codes(replies):
    return [(r.code, r.status) for r in replies]


def open_data(client):
    for line, code in [("EHLO attacker.test", 250), ("MAIL FROM:<a@attacker.test>", 250),
                       ("RCPT TO:<u@example.com>", 250), ("DATA", 354)]:
        assert client.command(line).code == code, line


# -- SMTP smuggling (2023, CVE-2023-51765 class) -----------------------------------------------------



def smuggling_payload(vector, marker):
    """A first message, the vector, then a whole smuggled transaction, its end of data and QUIT."""
    return (b"Subject: first-%s\r\n\r\nbody" % marker + vector
            + b"MAIL FROM:<admin@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n"
            + b"Subject: smuggled-%s\r\n\r\nevil\r\n.\r\nQUIT\r\n" % marker)


def smuggle(server, vector):
    """Send a smuggling ``vector`` inside DATA while a bystander's session spans it: (marker, every reply)."""
    marker = new_marker()
    with bystander(server):
        client = Client(server)
        open_data(client)
        client.send(smuggling_payload(vector, marker.encode()))
        replies = client.replies_until_closed()
        client.close()
    return marker, replies


@pytest.mark.parametrize("vector", SMUGGLING_VECTORS.values(), ids=SMUGGLING_VECTORS.keys())
def test_smuggling_vector_is_refused_over_a_socket(server, vector):
    """Default ``bare_newline reject``: the bare CR/LF gets ``521 5.5.2`` and the server hangs up; nothing is
    delivered, neither the first message nor the smuggled one; a session beside it is unaffected."""
    marker, replies = smuggle(server, vector)
    assert codes(replies) == [(521, "5.5.2")]
    assert delivered(server, marker) == []


@pytest.mark.parametrize("vector", SMUGGLING_VECTORS.values(), ids=SMUGGLING_VECTORS.keys())
def test_smuggling_vector_stays_one_message_when_normalizing(normalizing_server, vector):
    """``bare_newline normalize``: only CRLF.CRLF ends the data, so exactly one message is delivered, the first;
    the smuggled transaction is body text of it, never a message of its own, and carries no bare CR."""
    server = normalizing_server
    marker, replies = smuggle(server, vector)
    assert [r.code for r in replies] == [250, 221]
    [stored] = delivered(server, marker)
    message = email.message_from_bytes(stored)
    assert message["Subject"] == "first-%s" % marker
    body = message.get_payload()
    assert "Subject: smuggled-%s" % marker in body and "RCPT TO:<victim@example.com>" in body
    assert b"\r" not in stored


def test_end_of_data_inside_a_bdat_chunk_is_content(server):
    """BDAT: a chunk holding ``CRLF.CRLF`` and a whole second transaction is one message's content; exactly
    one message is delivered and the smuggled commands are never run."""
    marker = new_marker().encode()
    chunk = (b"Subject: first-%s\r\n\r\nbody\r\n.\r\nMAIL FROM:<admin@example.com>\r\nRCPT TO:<victim@example.com>\r\n"
             b"DATA\r\nSubject: smuggled-%s\r\n\r\nevil\r\n.\r\n" % (marker, marker))
    with bystander(server):
        client = Client(server)
        for line in ["EHLO attacker.test", "MAIL FROM:<a@attacker.test>", "RCPT TO:<u@example.com>"]:
            assert client.command(line).code == 250
        client.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk + b"QUIT\r\n")
        replies = client.replies_until_closed()
        client.close()
    assert [r.code for r in replies] == [250, 221]
    [stored] = delivered(server, marker.decode())
    assert email.message_from_bytes(stored)["Subject"] == "first-%s" % marker.decode()


# -- memory exhaustion -------------------------------------------------------------------------------------

def flood(client, total, block=b"A" * 65536, deadline=30.0):
    started = time.monotonic()
    for _ in range(total // len(block)):
        client.send(block)
        assert time.monotonic() - started < deadline, "flood took too long"


def test_fifty_megabyte_command_line_is_500_and_memory_stays_bounded(server):
    """50 MB without a newline as a command: one ``500 5.5.2``, the session lives on, the server's memory grows
    less than 20 MB, and a complete delivery in the middle of the flood goes through."""
    before = rss_kb(server)
    with bystander(server) as deliver:
        client = Client(server)
        flood(client, 25 * MB)
        deliver()
        flood(client, 25 * MB)
        grown = rss_kb(server) - before
        client.send(b"\r\nNOOP\r\n")
        assert codes([client.reply(), client.reply()]) == [(500, "5.5.2"), (250, "2.0.0")]
        client.close()
    assert grown < 20 * 1024, "server grew %d kB" % grown


def test_fifty_megabyte_data_line_is_552_and_memory_stays_bounded(server):
    """50 MB without a newline inside DATA: stored in pieces (lines have no length limit) until ``databytes``
    (10 MB), then dropped; ``552 5.3.4`` after the final dot, nothing delivered, memory bounded, other
    sessions served."""
    marker = new_marker()
    before = rss_kb(server)
    with bystander(server) as deliver:
        client = Client(server)
        open_data(client)
        client.send(b"Subject: %s\r\n\r\n" % marker.encode())
        flood(client, 25 * MB)
        deliver()
        flood(client, 25 * MB)
        grown = rss_kb(server) - before
        client.send(b"\r\n.\r\n")
        assert codes([client.reply()]) == [(552, "5.3.4")]
        assert client.command("NOOP").code == 250
        client.close()
    assert grown < 20 * 1024, "server grew %d kB" % grown
    assert delivered(server, marker) == []


def test_flooding_clients_do_not_starve_a_normal_one(server):
    """Three clients pour endless lines into the server at full speed while a normal client delivers five
    messages: each delivery still takes well under the client timeouts, and memory stays bounded."""
    before = rss_kb(server)
    stop = threading.Event()
    poured = []

    def pour():
        client = Client(server)
        block, total = b"F" * 65536, 0
        try:
            while not stop.is_set() and total < 2048 * MB:
                client.send(block)
                total += len(block)
        finally:
            poured.append(total)
            client.close()

    flooders = [threading.Thread(target=pour) for _ in range(3)]
    for flooder in flooders:
        flooder.start()
    try:
        took = [send_normal_message(server) for _ in range(5)]
        grown = rss_kb(server) - before
    finally:
        stop.set()
        for flooder in flooders:
            flooder.join()
    assert max(took) < 5, took
    assert sum(poured) > 5 * MB  # the flood really ran beside the deliveries
    assert grown < 20 * 1024, "server grew %d kB" % grown


def test_huge_bdat_chunk_without_newline_is_bounded(server):
    """A 50 MB BDAT chunk without a newline: memory stays bounded and the LAST chunk is refused with ``552``."""
    before = rss_kb(server)
    with bystander(server):
        client = Client(server)
        for line in ["EHLO attacker.test", "MAIL FROM:<a@attacker.test>", "RCPT TO:<u@example.com>"]:
            assert client.command(line).code == 250
        client.send(b"BDAT %d LAST\r\n" % (50 * MB))
        flood(client, 50 * MB)
        assert client.reply().code == 552
        grown = rss_kb(server) - before
        assert client.command("NOOP").code == 250
        client.close()
    assert grown < 20 * 1024, "server grew %d kB" % grown


def test_absurd_bdat_size_stores_at_most_databytes(smtpd_factory):
    """``BDAT 999999999999999 LAST``: the session reads on, but keeps no more than ``databytes`` of it."""
    session = TestSession(smtpd_factory(config={"databytes": "100000"}))
    session.mock_hook("rcpt", lambda plugin, transaction, recipient, **params: OK)
    session.command("EHLO attacker.test")
    session.command("MAIL FROM:<a@attacker.test>")
    session.command("RCPT TO:<u@example.com>")
    assert session.send(b"BDAT 999999999999999 LAST\r\n") == []
    line = b"x" * 70 + b"\r\n"
    for _ in range(40):
        assert session.send(line * 1000) == []
        assert session.transaction.data_size <= 100000 + len(line)
    assert codes(session.eof()) == [(451, "4.3.0")]


# -- too many recipients --------------------------------------------------------------------------------------

def test_ten_thousand_pipelined_rcpts(server):
    """10,000 RCPTs in one pipelined burst: the first ``max_rcpt`` (100) are 250, every other one
    ``452 4.5.3``; it takes seconds at most, the session and the server live on."""
    with bystander(server):
        client = Client(server)
        assert client.command("EHLO attacker.test").code == 250
        assert client.command("MAIL FROM:<a@attacker.test>").code == 250
        burst = b"".join(b"RCPT TO:<u%d@example.com>\r\n" % n for n in range(10000))
        started = time.monotonic()
        sender = threading.Thread(target=client.send, args=(burst,))  # read while writing: no deadlock
        sender.start()
        replies = [client.reply() for _ in range(10000)]
        sender.join()
        elapsed = time.monotonic() - started
        assert codes(replies[:100]) == [(250, "2.1.5")] * 100
        assert codes(replies[100:]) == [(452, "4.5.3")] * 9900
        assert client.command("RSET").code == 250
        client.close()
    assert elapsed < 20, elapsed


# -- garbage and absurd parameters ----------------------------------------------------------------------------

def test_binary_garbage_lines_are_500_and_the_session_lives(server):
    """Lines of random bytes (NUL, controls, invalid UTF-8, 8-bit) each get a 500; the session goes on."""
    rng = random.Random(20231218)
    alphabet = [b for b in range(256) if b not in (10, 13)]
    lines = [bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 600))) for _ in range(300)]
    lines += [b"\x00" * 100, b"MAIL FROM:<a@b.test>\x00RCPT TO:<x@elsewhere.test>", b"\x00" * 20000]
    with bystander(server):
        client = Client(server)
        client.send(b"".join(line + b"\r\n" for line in lines))
        replies = [client.reply() for _ in lines]
        assert {r.code for r in replies} == {500}
        assert client.command("NOOP").code == 250
        client.close()


def test_random_bytes_with_newlines_end_the_session_cleanly(server):
    """A megabyte of random bytes: every reply is well-formed, the server hangs up at the first bare newline
    (``521``), and it keeps serving others."""
    rng = random.Random(51765)
    garbage = bytes(rng.getrandbits(8) for _ in range(MB))
    with bystander(server):
        client = Client(server)
        sender = threading.Thread(target=lambda: _send_quietly(client, garbage))
        sender.start()
        replies = client.replies_until_closed()
        sender.join()
        client.close()
    assert replies == [] or replies[-1].code == 521


def _send_quietly(client, data):
    try:
        client.send(data)
    except OSError:
        pass  # the server hung up on us, which is the point


@pytest.mark.parametrize("line, expected", [
    ("MAIL FROM:<a@b.test> SIZE=99999999999999999999", (552, "5.3.4")),
    ("MAIL FROM:<a@b.test> SIZE=" + "9" * 480, (552, "5.3.4")),
    ("MAIL FROM:<a@b.test> SIZE=-1", (501, "5.5.4")),
    ("MAIL FROM:<a@b.test> X-LONG=" + "v" * 10240, (500, "5.5.2")),
    ("MAIL FROM:<%s@b.test>" % ("a" * 10240), (500, "5.5.2")),
    ("EHLO " + "h" * 10240, (500, "5.5.2")),
    ("MAIL FROM:<a@b.test> " + " ".join("P%d=1" % n for n in range(2000)), (500, "5.5.2")),
    ("MAIL FROM:<a@b.test> " + " ".join("P%d" % n for n in range(100)), (555, "5.5.4")),
])
def test_absurd_parameters(server, line, expected):
    """Absurd MAIL parameters: an astronomical SIZE is ``552 5.3.4``, 10 KB arguments ``500 5.5.2``, a
    hundred unknown keywords ``555``; no sender is set, and the next command works."""
    with bystander(server):
        client = Client(server)
        if not line.startswith("EHLO"):
            assert client.command("EHLO attacker.test").code == 250
        assert codes([client.command(line)]) == [expected]
        assert client.command("MAIL FROM:<a@b.test>").code == (503 if line.startswith("EHLO") else 250)
        client.close()


# -- replies and headers cannot be forged through plugin text ---------------------------------------------------

def test_plugin_message_cannot_inject_a_reply(smtpd_factory):
    """A plugin message with CR/LF (e.g. echoing client input) becomes continuation lines of its own reply:
    every line carries the refusing code, so a client never reads a forged ``250``."""
    session = TestSession(smtpd_factory())
    session.mock_hook("rcpt", lambda plugin, transaction, recipient, **params:
                      (DENY, "no such user\r\n250 2.1.5 ok\r\n354 go ahead\n.\r\n"))
    session.command("EHLO client.test")
    session.command("MAIL FROM:<a@b.test>")
    session.session.feed(b"RCPT TO:<c@d.test>\r\n")
    raw = session.transport.take()
    assert raw == (b"550-5.7.1 no such user\r\n550-5.7.1 250 2.1.5 ok\r\n550-5.7.1 354 go ahead\r\n"
                   b"550 5.7.1 .\r\n")
    assert session.transaction.recipients == []


@pytest.mark.parametrize("line, code", [
    (b"EHLO evil.test\rBcc: victim@example.com", 521),
    (b"EHLO evil.test\x0bX-Injected: 1", 500),
    (b"EHLO evil.test\x00X-Injected: 1", 500),
    ("EHLO evil.test\u2028X-Injected: 1".encode(), 250),
    ("EHLO evil.test\x85X-Injected: 1".encode(), 250),
])
def test_helo_name_cannot_add_header_lines(smtpd_factory, line, code):
    """The HELO name goes into our Received header: a CR or control byte refuses the command before that, and
    a Unicode line separator ends the name (it is whitespace), so Received stays one header of two lines."""
    session = TestSession(smtpd_factory())
    queued = []

    def queue(plugin, transaction):
        queued.append(transaction.header.as_bytes())
        return OK

    session.mock_hook("rcpt", lambda plugin, transaction, recipient, **params: OK)
    session.mock_hook("queue", queue, name="queue")
    assert session.send(line + b"\r\n")[0].code == code
    if code != 250:
        assert session.connection.hello_host is None
        return
    assert session.connection.hello_host == "evil.test"
    session.send_message("a@b.test", ["c@d.test"], "Subject: x\n\nbody\n")
    [header] = queued
    assert header.count(b"\n") == 3 and b"(HELO evil.test)" in header  # Received (two lines) and Subject
    assert b"X-Injected" not in header


@pytest.mark.parametrize("domain", ["evil\u2028x.test", "evil\x85x.test", "evil\u00a0x.test", "ex\u200bample.com"])
def test_utf8_domain_with_separators_or_invisible_characters_is_501(smtpd_factory, domain):
    """SMTPUTF8 domains may hold U-labels, but no Unicode space, line separator or invisible character, which
    could split a header line for a lax parser downstream or make a lookalike of a local domain."""
    session = TestSession(smtpd_factory())
    session.command("EHLO client.test")
    assert codes(session.command("MAIL FROM:<a@%s> SMTPUTF8" % domain)) == [(501, "5.5.4")]
    session.command("MAIL FROM:<a@b.test> SMTPUTF8")
    assert codes(session.command("RCPT TO:<u@%s>" % domain)) == [(501, "5.1.3")]


def test_plugin_header_value_with_newlines_is_folded():
    """A header value a plugin builds from client text cannot add a header line: line breaks fold."""
    from qpgevent.header import Header
    header = Header()
    header.add("X-Helo", "evil.test\r\nBcc: victim@example.com\nX-Other: 1")
    header.replace("X-Helo", "again\nTo: someone@example.com")
    assert header.names() == ["X-Helo"]
    assert header.as_string() == "X-Helo: again\n To: someone@example.com\n"


def test_spool_dir_of_someone_else_or_readable_refuses_start(tmp_path):
    """A spool dir that others can read (or that another user owns) stops start-up with the fix."""
    from qpgevent.errors import ConfigError
    from qpgevent.testing import make_smtpd
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o755)
    spool.chmod(0o755)
    with pytest.raises(ConfigError, match="mode 0700"):
        make_smtpd(tmp_path, plugins=["rcpt_ok"])
    spool.chmod(0o700)
    assert make_smtpd(tmp_path, plugins=["rcpt_ok"]).spool_dir == str(spool)
