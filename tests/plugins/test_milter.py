"""milter: against the real opendkim (signing, and verifying with rejection), and a test milter for the other actions.

opendkim is started by a session-scoped fixture on free 127.0.0.1 ports with
its own config, key (made with opendkim-genkey) and pid file; tests/milterserver.py
is a test milter (a real socket server speaking the protocol) for what
opendkim never does.
"""
import re
import smtplib
import socket
import struct
import subprocess
import time

import dkim
import dns.resolver
import pytest

from milterserver import TestMilter
from qpgevent.testing import TestSession, free_port, make_smtpd

ORIGIN = "milter-test.example."
DOMAIN = "signed.milter-test.example"
RCPT = "u@example.com"
MESSAGE = "From: a@%s\nTo: %s\nSubject: hi\n\nHello there.\n" % (DOMAIN, RCPT)


class OpenDKIM:
    """``opendkim -f -x CONF`` on a free 127.0.0.1 port, with a config written here."""

    def __init__(self, directory, name, settings):
        self.port = free_port("127.0.0.1")
        conf = directory / ("%s.conf" % name)
        conf.write_text("Socket inet:%d@127.0.0.1\nPidFile %s\nSyslog no\n%s\n"
                        % (self.port, directory / ("%s.pid" % name), "\n".join(settings)))
        self.process = subprocess.Popen(["opendkim", "-f", "-x", str(conf)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("opendkim did not start: %s" % self.process.stderr.read().decode())
                time.sleep(0.05)

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


@pytest.fixture(scope="module")
def opendkim(tmp_path_factory, dns_server):
    """A signing opendkim (``sign``) and a verifying one that rejects (``verify``); the key's TXT record in DNS."""
    base = tmp_path_factory.mktemp("opendkim")
    subprocess.run(["opendkim-genkey", "-D", str(base), "-d", DOMAIN, "-s", "sel", "-b", "1024"], check=True,
                   timeout=60)
    strings = re.findall(r'"([^"]*)"', (base / "sel.txt").read_text())
    dns_server.add_zone(ORIGIN, ["sel._domainkey.%s. 300 IN TXT %s" % (DOMAIN, " ".join('"%s"' % s for s in strings))])
    (base / "keys").write_text("sel._domainkey.%s %s\n" % (DOMAIN, "".join(strings)))
    sign = OpenDKIM(base, "sign", ["Mode s", "Domain %s" % DOMAIN, "Selector sel", "KeyFile %s" % (base / "sel.private"),
                                   "Canonicalization simple/simple", "RequireSafeKeys false"])
    verify = OpenDKIM(base, "verify", ["Mode v", "On-NoSignature reject", "On-BadSignature reject",
                                       "TestPublicKeys %s" % (base / "keys")])
    yield {"sign": sign.port, "verify": verify.port}
    sign.stop()
    verify.stop()


def txt_from(dns_server):
    """dkimpy's dnsfunc, asking the test DNS server: the signature is checked as a receiver would."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = dns_server.port

    def lookup(name, timeout=5):
        answer = resolver.resolve(name.decode(), "TXT", lifetime=timeout)
        return b"".join(b"".join(record.strings) for record in answer)
    return lookup


def session(tmp_path, milter_line, remote_ip="127.0.0.1", config=None):
    smtpd = make_smtpd(tmp_path, plugins=[milter_line, "rcpt_ok", "queue/maildir %s" % (tmp_path / "Maildir")],
                       config=dict({"rcpthosts": ["example.com"]}, **(config or {})))
    return TestSession(smtpd, remote_ip=remote_ip)


def stored(tmp_path):
    paths = list((tmp_path / "Maildir" / "new").iterdir()) if (tmp_path / "Maildir" / "new").exists() else []
    return [path.read_bytes() for path in paths]


# -- the real opendkim -------------------------------------------------------------------------------------------

def test_opendkim_signs_over_a_real_socket_and_the_signature_verifies(live_server, tmp_path, opendkim, dns_server):
    """smtplib -> qpgevent -> opendkim (signing): the stored message has a DKIM-Signature dkimpy verifies via DNS."""
    body = "Hello there.\r\n\r\nA second paragraph,  with  spaces.\r\n"
    server = live_server(plugins=["milter opendkim 127.0.0.1:%d" % opendkim["sign"], "rcpt_ok",
                                  "queue/maildir %s" % (tmp_path / "Maildir")])
    with smtplib.SMTP(*server.address, timeout=30) as client:
        client.sendmail("a@" + DOMAIN, [RCPT], "From: a@%s\r\nTo: %s\r\nSubject: signed\r\n\r\n%s" % (DOMAIN, RCPT, body))
    [message] = stored(tmp_path)
    assert b"\nDKIM-Signature: v=1; a=rsa-sha256; c=simple/simple;" in b"\n" + message
    assert message.endswith(b"\n\n" + body.replace("\r\n", "\n").encode())
    assert dkim.verify(message.replace(b"\n", b"\r\n"), dnsfunc=txt_from(dns_server))


def test_opendkim_verifier_rejects_an_unsigned_message(tmp_path, opendkim):
    """On-NoSignature reject: opendkim's own reply code and text reach our client, nothing is queued."""
    replies = session(tmp_path, "milter dkimcheck 127.0.0.1:%d" % opendkim["verify"]).send_message(
        "a@" + DOMAIN, [RCPT], MESSAGE)
    assert (replies[-1].code, replies[-1].text) == (550, "5.7.0 no DKIM signature data")
    assert stored(tmp_path) == []


def test_opendkim_verifier_rejects_a_tampered_message_and_takes_the_intact_one(tmp_path, opendkim):
    """Signed by the signing opendkim, then checked by the verifying one: intact passes, a changed body is refused."""
    signer = session(tmp_path / "sign", "milter opendkim 127.0.0.1:%d" % opendkim["sign"])
    signer.send_message("a@" + DOMAIN, [RCPT], MESSAGE)
    [signed] = stored(tmp_path / "sign")
    verifier = session(tmp_path / "verify", "milter dkimcheck 127.0.0.1:%d" % opendkim["verify"])
    replies = verifier.send_message("a@" + DOMAIN, [RCPT], signed)
    assert replies[-1].code == 250
    replies = verifier.send_message("a@" + DOMAIN, [RCPT], signed.replace(b"Hello there.", b"Hello THERE."))
    assert replies[-1].code == 550 and replies[-1].text.startswith("5.7.0 ")
    assert len(stored(tmp_path / "verify")) == 1


# -- the test milter: every step and action -----------------------------------------------------------------------

@pytest.fixture
def milter():
    made = []

    def factory(**kwargs):
        made.append(TestMilter(**kwargs))
        return made[-1]
    yield factory
    for server in made:
        server.close()


def capture_queue(test_session):
    """What the queue hook sees: sender, recipients, notes, message; the maildir still stores it."""
    seen = {}

    def spy(plugin, transaction):
        seen.update(sender=transaction.sender.format(), recipients=[r.format() for r in transaction.recipients],
                    notes=dict(transaction.notes), message=b"".join(transaction.message_blocks()))
    test_session.mock_hook("queue", spy)
    return seen


def macros(server, command):
    """The macros sent before ``command`` in the last session, as a dict."""
    found = {}
    for code, data in server.sessions[-1]:
        if code == b"D" and data[:1] == command:
            words = data[1:].split(b"\0")[:-1]
            found.update(zip((w.decode() for w in words[::2]), (w.decode() for w in words[1::2])))
    return found


def test_negotiates_version_6_and_sends_every_step_with_macros(tmp_path, milter):
    server = milter()
    test_session = session(tmp_path, "milter test %d" % server.port, remote_ip="127.0.0.9")
    replies = test_session.send_message("a@sender.test", [RCPT], "Subject: hi\n\nbody\n")
    test_session.command("QUIT")
    server.wait_for(b"Q")
    assert replies[-1].code == 250
    version, actions, protocol = server.offered
    assert (version, actions) == (6, 0xFF) and protocol & 0x400 and protocol & 0x100000  # SKIP, HDR_LEADSPC
    steps = [c for c in server.commands() if c != b"D"]
    assert steps[:6] == [b"O", b"C", b"H", b"M", b"R", b"T"]
    assert steps[-4:] == [b"N", b"B", b"E", b"Q"] and b"L" in steps
    connect = dict(server.sessions[-1])[b"C"]
    assert connect.endswith(b"\x004" + struct.pack("!H", test_session.connection.remote_port or 0) + b"127.0.0.9\0")
    assert macros(server, b"C")["{client_addr}"] == "127.0.0.9" and macros(server, b"C")["j"] == "mx.test"
    assert macros(server, b"M")["{mail_addr}"] == "a@sender.test" and macros(server, b"M")["{i}"]
    assert macros(server, b"R")["{rcpt_addr}"] == RCPT
    assert dict(server.sessions[-1])[b"M"] == b"<a@sender.test>\0"
    assert dict(server.sessions[-1])[b"B"] == b"body\r\n"


def test_header_actions_add_change_insert_delete(tmp_path, milter):
    server = milter(eom=[(b"h", b"X-Added\0 yes\0"), (b"m", struct.pack("!I", 1) + b"Subject\0 changed\0"),
                         (b"i", struct.pack("!I", 0) + b"X-Top\0 first\0"),
                         (b"m", struct.pack("!I", 1) + b"X-Remove\0\0")], protocol=0x100000)
    test_session = session(tmp_path, "milter test 127.0.0.1:%d" % server.port)
    replies = test_session.send_message("a@sender.test", [RCPT], "Subject: hi\nX-Remove: me\nX-Keep: 1\n\nbody\n")
    assert replies[-1].code == 250
    [message] = stored(tmp_path)
    head = message.split(b"\n\n")[0]
    assert b"X-Top: first\n" in head and head.index(b"X-Top") < head.index(b"Received:")
    assert b"Subject: changed\n" in head and b"X-Remove" not in head and b"X-Keep: 1\n" in head
    assert head.endswith(b"X-Added: yes") and message.endswith(b"\n\nbody\n")


def test_replace_body(tmp_path, milter):
    server = milter(eom=[(b"b", b"new body\r\n"), (b"b", b"second part\r\n")])
    test_session = session(tmp_path, "milter test 127.0.0.1:%d" % server.port)
    assert test_session.send_message("a@sender.test", [RCPT], "Subject: hi\n\nold body\n" * 1)[-1].code == 250
    [message] = stored(tmp_path)
    assert message.endswith(b"Subject: hi\n\nnew body\nsecond part\n")


def test_recipients_sender_and_quarantine(tmp_path, milter):
    server = milter(eom=[(b"+", b"<extra@example.com>\0"), (b"-", b"<u@example.com>\0"),
                         (b"e", b"<new@sender.test>\0"), (b"q", b"looks odd\0")])
    test_session = session(tmp_path, "milter test 127.0.0.1:%d" % server.port)
    seen = capture_queue(test_session)
    assert test_session.send_message("a@sender.test", [RCPT, "v@example.com"], "Subject: hi\n\nb\n")[-1].code == 250
    assert seen["recipients"] == ["<v@example.com>", "<extra@example.com>"]
    assert seen["sender"] == "<new@sender.test>" and seen["notes"]["quarantine"] == "looks odd"


def test_action_not_negotiated_is_ignored(tmp_path, milter):
    server = milter(eom=[(b"b", b"replaced\r\n"), (b"h", b"X-Added\0yes\0")], actions=0x01)
    test_session = session(tmp_path, "milter test 127.0.0.1:%d" % server.port)
    assert test_session.send_message("a@sender.test", [RCPT], "Subject: hi\n\nkept\n")[-1].code == 250
    [message] = stored(tmp_path)
    assert message.endswith(b"X-Added: yes\n\nkept\n")


@pytest.mark.parametrize("where", ["M", "E"])
def test_discard_answers_250_and_stores_nothing(tmp_path, milter, where):
    server = milter(replies={where: [b"d"]}, eom_final=b"d" if where == "E" else b"c")
    test_session = session(tmp_path, "milter test 127.0.0.1:%d" % server.port)
    replies = test_session.send_message("a@sender.test", [RCPT], "Subject: hi\n\nb\n")
    assert replies[-1].code == 250 and "discarded" in replies[-1].text
    assert stored(tmp_path) == []


def test_reject_one_recipient_keeps_the_others(tmp_path, milter):
    server = milter(replies={"R": [b"c", b"r"]})
    test_session = session(tmp_path, "milter test 127.0.0.1:%d" % server.port)
    seen = capture_queue(test_session)
    replies = test_session.send_message("a@sender.test", [RCPT, "v@example.com"], "Subject: hi\n\nb\n")
    assert [r.code for r in replies[-3:]] == [250, 550, 250]  # RCPT, RCPT, end of DATA
    assert seen["recipients"] == ["<%s>" % RCPT]


def test_tempfail_and_reply_codes(tmp_path, milter):
    server = milter(replies={"M": [b"t", b"c"], "H": [(b"y", b"550-5.7.1 first line\r\n550 5.7.1 go away\0"), b"c"]})
    test_session = session(tmp_path, "milter test 127.0.0.1:%d" % server.port)
    [helo] = test_session.command("EHLO client.test")
    assert helo.code == 550 and helo.lines == ["5.7.1 first line", "5.7.1 go away"]
    test_session.command("HELO client.test")
    [mail] = test_session.command("MAIL FROM:<a@sender.test>")
    assert mail.code == 450 and mail.text.startswith("4.7.1 ")
    [mail] = test_session.command("MAIL FROM:<a@sender.test>")
    assert mail.code == 250
    assert b"A" in server.commands()  # the refused transaction was aborted before the next MAIL


def test_body_goes_in_chunks_of_at_most_65535_and_skip_stops_it(tmp_path, milter):
    body = "".join("line %06d of a long message\n" % n for n in range(8000))
    server = milter()
    test_session = session(tmp_path, "milter test 127.0.0.1:%d" % server.port)
    assert test_session.send_message("a@sender.test", [RCPT], "Subject: big\n\n" + body)[-1].code == 250
    chunks = [data for code, data in server.sessions[-1] if code == b"B"]
    assert len(chunks) > 2 and max(map(len, chunks)) <= 65535
    assert b"".join(chunks) == body.replace("\n", "\r\n").encode()
    skipper = milter(replies={"B": [b"s"]}, eom=[(b"p", b"")])  # SKIP after one chunk; PROGRESS before the verdict
    test_session = session(tmp_path / "skip", "milter test 127.0.0.1:%d" % skipper.port)
    assert test_session.send_message("a@sender.test", [RCPT], "Subject: big\n\n" + body)[-1].code == 250
    assert [c for c in skipper.commands() if c in (b"B", b"E")] == [b"B", b"E"]


def test_accept_at_connect_leaves_the_milter_out(tmp_path, milter):
    server = milter(replies={"C": [b"a"]})
    test_session = session(tmp_path, "milter test 127.0.0.1:%d" % server.port)
    assert test_session.send_message("a@sender.test", [RCPT], "Subject: hi\n\nb\n")[-1].code == 250
    server.wait_for(b"Q")  # the milter is out of the session as soon as it accepts the connection
    assert [c for c in server.commands() if c != b"D"] == [b"O", b"C", b"Q"]


# -- the milter down or silent: default_action -------------------------------------------------------------------

def test_milter_down_tempfails_by_default(tmp_path):
    port = free_port("127.0.0.1")  # nothing listens there
    test_session = session(tmp_path, "milter gone 127.0.0.1:%d connect_timeout 1" % port)
    [greeting] = test_session.greeting
    assert greeting.code == 450 and greeting.text == "4.3.0 Mail filter gone unavailable, try again later"
    assert stored(tmp_path) == []


def test_milter_down_with_default_action_accept_lets_mail_through(tmp_path):
    port = free_port("127.0.0.1")
    test_session = session(tmp_path, "milter gone 127.0.0.1:%d default_action accept" % port)
    assert test_session.send_message("a@sender.test", [RCPT], "Subject: hi\n\nb\n")[-1].code == 250
    assert len(stored(tmp_path)) == 1


@pytest.mark.parametrize("action, code", [("tempfail", 450), ("accept", 250)])
def test_silent_milter_is_cut_off_after_command_timeout(tmp_path, milter, action, code):
    server = milter(replies={"M": [None]})
    test_session = session(tmp_path, "milter slow 127.0.0.1:%d command_timeout 0.5 default_action %s"
                           % (server.port, action))
    test_session.command("EHLO client.test")
    started = time.monotonic()
    [mail] = test_session.command("MAIL FROM:<a@sender.test>")
    assert mail.code == code and time.monotonic() - started < 3


@pytest.mark.parametrize("line, words", [("milter onlyname", "a name and the milter's address"),
                                         ("milter x nowhere", "not a milter address"),
                                         ("milter x 8891 command_timeout 60", "outlast plugin_timeout")])
def test_bad_arguments_stop_start_up(tmp_path, line, words):
    with pytest.raises(Exception) as error:
        make_smtpd(tmp_path, plugins=[line])
    assert words in str(error.value)
