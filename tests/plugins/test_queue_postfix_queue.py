"""queue/postfix-queue against a real private Postfix, and Postfix as the first hop relaying through us.

One Postfix instance serves the whole module (tests/daemons/postfix_private.py):
its cleanup socket is where queue/postfix-queue hands mail, its ``virtual``
agent delivers ``pfq.test`` into Maildirs we read, and every other domain
goes to ``relay_target``, a qpgevent with STARTTLS, over Postfix's ``smtp``
client.
"""
import os
import re
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from qpgevent import postfix_cleanup as cleanup
from qpgevent.errors import ConfigError
from qpgevent.testing import LiveServer, make_smtpd, wait_for, write_config

from daemons.postfix_private import PostfixInstance

ROOT = Path(__file__).resolve().parents[2]
CERT_TOOL = ROOT / "bin" / "qpsmtpd-tls-cert"

pytestmark = [pytest.mark.skipif(not shutil.which("postfix"), reason="Postfix is not installed (tests/run installs it)"),
              pytest.mark.skipif(os.geteuid() != 0, reason="Postfix's master must be started as root")]

HEADER_CHECKS = ["/^X-Pfq-Test: reject/ REJECT 5.7.1 pfq says no",
                 "/^X-Pfq-Test: defer/ REJECT 4.7.1 pfq says later"]

# The relay target's verdicts, by recipient: what Postfix must do with a 4xx and a 5xx.
RELAY_VERDICTS = '''
from qpgevent import DECLINED, DENY, DENYSOFT


def hook_rcpt(self, transaction, recipient, **params):
    if recipient.user.startswith("defer"):
        return DENYSOFT, "pfq relay target says later (#4.2.0)"
    if recipient.user.startswith("refuse"):
        return DENY, "pfq relay target says no such user (#5.1.1)"
    return DECLINED
'''

MESSAGE = (b"From: Bob <bob@pfq.test>\n"
           b"To: alice@pfq.test\n"
           b"Subject: caf\xc3\xa9 \xe9t\xe9\n"
           b"Message-Id: <pfq-1@pfq.test>\n"
           b"Date: Thu, 03 Dec 2026 22:00:00 +0000\n"
           b"X-Folded: first\n"
           b"  second\n"
           b"\n"
           b"line one\n"
           b".a line that starts with a dot\n"
           b"..two dots\n"
           b".\n"
           b"8-bit: \xff\xfe\x80 and UTF-8 \xe2\x82\xac\n"
           b"   trailing spaces   \n"
           b"\n"
           b"last line\n")


def make_certs(config_dir):
    subprocess.run([sys.executable, str(CERT_TOOL), "--config-dir", str(config_dir), "--host", "127.0.0.1", "--force"],
                   check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def relay_target(tmp_path_factory):
    """qpgevent with STARTTLS for relay.test: Postfix's relayhost.  4xx for defer*@, 5xx for refuse*@."""
    base = tmp_path_factory.mktemp("relay-target")
    (base / "test-plugins").mkdir()
    (base / "test-plugins" / "relay_verdicts.py").write_text(RELAY_VERDICTS)
    make_certs(base / "config")
    config_dir = write_config(base / "config", {
        "me": "relay.qpg.test", "rcpthosts": ["relay.test"], "spool_dir": str(base / "spool"), "loglevel": "6",
        "plugin_dirs": str(base / "test-plugins"),
        "plugins": ["tls", "relay_verdicts", "rcpt_ok", "queue/maildir %s" % (base / "Maildir")]})
    server = LiveServer(config_dir, cwd=base).start()
    server.maildir = base / "Maildir"
    yield server
    server.stop()


@pytest.fixture(scope="module")
def postfix(relay_target):
    """The private Postfix; its relayhost is ``relay_target``; stopped and removed after the module."""
    base = tempfile.mkdtemp(prefix="qpg-postfix-")
    os.chmod(base, 0o755)  # the postfix and virtual users must reach the queue and the Maildirs below
    instance = PostfixInstance(base, relayhost="[127.0.0.1]:%d" % relay_target.port, header_checks=HEADER_CHECKS)
    try:
        instance.start()
        yield instance
    finally:
        instance.remove()


def delivered(postfix, user, count=1, seconds=20):
    """Wait for ``count`` messages in ``user``'s Maildir; their contents."""
    assert wait_for(lambda: len(postfix.mailbox(user)) >= count, seconds), postfix.log[-3000:]
    return [path.read_bytes() for path in postfix.mailbox(user)]


def split_trace(content, message):
    """The header lines a delivered file has before ``message``, which must end it byte for byte."""
    assert content.endswith(message), content[-400:]
    return content[:-len(message)]


def relayed(postfix, relay_target, recipient, seconds=20):
    """The one message for ``recipient`` in the relay target's Maildir, once it is there."""
    new = relay_target.maildir / "new"

    def found():
        files = new.iterdir() if new.is_dir() else ()
        return [path.read_bytes() for path in files if b"Delivered-To: %s\n" % recipient.encode() in path.read_bytes()]
    assert wait_for(found, seconds), postfix.log[-3000:]
    [content] = found()
    return content


def header_names(block):
    """Names of the header fields in ``block`` (continuation lines belong to the field before)."""
    return [line.split(b":", 1)[0] for line in block.split(b"\n") if line and line[:1] not in b" \t"]


# -- queue/postfix-queue -----------------------------------------------------------------------------


def test_message_reaches_the_maildir_byte_exact_through_cleanup(postfix, live_server):
    """smtplib -> us -> Postfix cleanup -> virtual: the file is Postfix's delivery lines, our Received,
    then the message byte for byte (8-bit, dots, a 5000-octet line, 300 KB), and the 250 names the queue id."""
    message = MESSAGE + b"x" * 5000 + b"\n" + b"filler line of some length\n" * 12000
    server = live_server(plugins=["rcpt_ok", "queue/postfix-queue %s" % postfix.cleanup_socket],
                         config={"rcpthosts": ["pfq.test"]})
    before = len(postfix.mailbox("alice"))
    with smtplib.SMTP(*server.address, timeout=30) as client:
        client.ehlo("client.test")
        client.mail("bob@pfq.test")
        client.rcpt("alice@pfq.test")
        code, text = client.data(message.replace(b"\n", b"\r\n"))
    assert code == 250, text
    queue_id = re.search(rb"\(Queue-Id: ([0-9A-F]+)\)", text).group(1).decode()
    assert text.startswith(b"2.0.0 Queued! <pfq-1@pfq.test> (Queue-Id: ")
    content = delivered(postfix, "alice", before + 1)[-1]
    trace = split_trace(content, message)
    assert header_names(trace) == [b"Return-Path", b"X-Original-To", b"Delivered-To", b"Received"]
    assert trace.startswith(b"Return-Path: <bob@pfq.test>\n")
    assert re.search(rb"\nReceived: from \S+ \(HELO client\.test\) \(127\.0\.0\.1\)\n by mx\.test \(qpgevent/", trace)
    assert "%s: to=<alice@pfq.test>, relay=virtual" % queue_id in postfix.log


def test_flags_reach_cleanup(postfix, session_factory):
    """FLAG_FILTER turns Postfix's header_checks on: REJECT 5.7.1 is our 552 with its text, REJECT 4.7.1 our 452;
    without the flag the same message is delivered.  Nothing refused is left in Postfix's queue."""
    before = len(postfix.mailbox("alice"))
    with_filter = session_factory(plugins=["rcpt_ok", "queue/postfix-queue %s FLAG_FILTER" % postfix.cleanup_socket],
                                  config={"rcpthosts": ["pfq.test"]})
    refused = with_filter.send_message("bob@pfq.test", ["alice@pfq.test"], b"X-Pfq-Test: reject\n\nhi\n")[-1]
    assert (refused.code, refused.text) == (552, "5.7.1 pfq says no")
    deferred = with_filter.send_message("bob@pfq.test", ["alice@pfq.test"], b"X-Pfq-Test: defer\n\nhi\n")[-1]
    assert (deferred.code, deferred.text) == (452, "4.7.1 pfq says later")
    plain = session_factory(plugins=["rcpt_ok", "queue/postfix-queue %s" % postfix.cleanup_socket],
                            config={"rcpthosts": ["pfq.test"]})
    assert plain.send_message("bob@pfq.test", ["alice@pfq.test"], b"X-Pfq-Test: reject\n\nhi\n")[-1].code == 250
    assert delivered(postfix, "alice", before + 1)[-1].endswith(b"X-Pfq-Test: reject\n\nhi\n")
    assert len(postfix.mailbox("alice")) == before + 1  # the refused two never reached Postfix's queue
    assert "reject: header X-Pfq-Test: reject" in postfix.log


def test_dsn_requests_are_passed_on(postfix, live_server):
    """DSN is advertised; NOTIFY=SUCCESS, RET=HDRS, ENVID and ORCPT reach Postfix, which sends bob its
    success report with the decoded envelope id and original recipient, and headers only."""
    server = live_server(plugins=["rcpt_ok", "queue/postfix-queue %s" % postfix.cleanup_socket],
                         config={"rcpthosts": ["pfq.test"]})
    before = len(postfix.mailbox("bob"))
    with smtplib.SMTP(*server.address, timeout=30) as client:
        client.ehlo("client.test")
        assert client.has_extn("dsn")
        client.sendmail("bob@pfq.test", ["alice@pfq.test"], b"Subject: dsn\r\n\r\nbody of the dsn test\r\n",
                        mail_options=["RET=HDRS", "ENVID=pfq+2Benv"],
                        rcpt_options=["NOTIFY=SUCCESS", "ORCPT=rfc822;alice+2Bpfq@pfq.test"])
    report = delivered(postfix, "bob", before + 1)[-1]
    assert b"Subject: Successful Mail Delivery Report" in report
    assert b"Original-Envelope-Id: pfq+env" in report
    assert b"Original-Recipient: rfc822;alice+pfq@pfq.test" in report
    assert b"Subject: dsn" in report and b"body of the dsn test" not in report


def test_smtputf8_and_null_sender(postfix, session_factory):
    """A null sender and an SMTPUTF8 message with a UTF-8 sender are queued and delivered as sent."""
    session = session_factory(plugins=["rcpt_ok", "queue/postfix-queue %s" % postfix.cleanup_socket],
                              config={"rcpthosts": ["pfq.test"]})
    before = len(postfix.mailbox("alice"))
    assert session.send_message("", ["alice@pfq.test"], b"Subject: bounce\n\nnull\n")[-1].code == 250
    assert session.command("MAIL FROM:<j\u00f6rg@pfq.test> SMTPUTF8")[-1].code == 250
    assert session.command("RCPT TO:<alice@pfq.test>")[-1].code == 250
    assert session.data("Subject: utf8\n\nj\u00f6rg\n")[-1].code == 250
    first, second = delivered(postfix, "alice", before + 2)[-2:]
    assert first.startswith(b"Return-Path: <>\n")
    assert second.startswith("Return-Path: <j\u00f6rg@pfq.test>\n".encode()) and second.endswith("j\u00f6rg\n".encode())


def test_smtputf8_reaches_postfix(postfix, relay_target, session_factory):
    """The SMTPUTF8 flag goes to cleanup: Postfix relays the UTF-8 sender on with SMTPUTF8 (without the flag it
    would send the address without it and our relay target would refuse it)."""
    session = session_factory(plugins=["rcpt_ok", "queue/postfix-queue %s" % postfix.cleanup_socket],
                              config={"rcpthosts": ["relay.test"]})
    session.command("EHLO client.test")
    assert session.command("MAIL FROM:<j\u00f6rg@pfq.test> SMTPUTF8")[-1].code == 250
    assert session.command("RCPT TO:<dave@relay.test>")[-1].code == 250
    assert session.data("Subject: utf8 relayed\n\nj\u00f6rg\n")[-1].code == 250
    assert relayed(postfix, relay_target, "dave@relay.test").startswith("Return-Path: <j\u00f6rg@pfq.test>\n".encode())


def test_no_cleanup_socket_is_451_and_the_client_keeps_the_message(tmp_path, live_server):
    """A missing socket (Postfix not installed, wrong path) gives 451 over SMTP; the error is logged."""
    server = live_server(plugins=["rcpt_ok", "queue/postfix-queue %s" % (tmp_path / "no" / "cleanup")],
                         config={"rcpthosts": ["pfq.test"]})
    with smtplib.SMTP(*server.address, timeout=30) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("bob@pfq.test", ["alice@pfq.test"], b"Subject: x\r\n\r\nx\r\n")
    assert refused.value.smtp_code == 451
    assert "no cleanup service answers" in server.log


def test_stopped_postfix_is_451(tmp_path, session_factory):
    """A socket file nobody listens on (what a stopped Postfix leaves behind) gives 451."""
    stale = str(tmp_path / "cleanup")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(stale)
    session = session_factory(plugins=["rcpt_ok", "queue/postfix-queue %s" % stale], config={"rcpthosts": ["pfq.test"]})
    reply = session.send_message("bob@pfq.test", ["alice@pfq.test"], b"Subject: x\n\nx\n")[-1]
    assert (reply.code, reply.status) == (451, "4.3.0")


def test_a_silent_cleanup_is_451_within_the_timeout(tmp_path, session_factory):
    """A cleanup that accepts and never answers costs ``timeout`` seconds, then 451."""
    path = str(tmp_path / "cleanup")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)
    session = session_factory(plugins=["rcpt_ok", "queue/postfix-queue %s timeout 1" % path],
                              config={"rcpthosts": ["pfq.test"]})
    started = time.monotonic()
    reply = session.send_message("bob@pfq.test", ["alice@pfq.test"], b"Subject: x\n\nx\n")[-1]
    listener.close()
    assert reply.code == 451
    assert 0.9 < time.monotonic() - started < 5


def test_cleanup_sockets_are_tried_in_order(tmp_path, postfix, session_factory):
    """config cleanup_sockets: a dead service first, then Postfix's; the message goes to the one that answers."""
    session = session_factory(plugins=["rcpt_ok", "queue/postfix-queue"],
                              config={"rcpthosts": ["pfq.test"],
                                      "cleanup_sockets": [str(tmp_path / "dead"), postfix.cleanup_socket]})
    before = len(postfix.mailbox("alice"))
    assert session.send_message("bob@pfq.test", ["alice@pfq.test"], b"Subject: fallback\n\nok\n")[-1].code == 250
    assert delivered(postfix, "alice", before + 1)[-1].endswith(b"Subject: fallback\n\nok\n")


def test_postfixqueue_environment_names_a_tcp_cleanup(postfix, live_server):
    """$POSTFIXQUEUE overrides the argument; ``host:port`` reaches a cleanup that master.cf runs as inet service."""
    server = live_server(plugins=["rcpt_ok", "queue/postfix-queue /nonexistent/cleanup"],
                         config={"rcpthosts": ["pfq.test"]}, env={"POSTFIXQUEUE": "127.0.0.1:%d" % postfix.cleanup_port})
    before = len(postfix.mailbox("alice"))
    with smtplib.SMTP(*server.address, timeout=30) as client:
        client.sendmail("bob@pfq.test", ["alice@pfq.test"], b"Subject: tcp\r\n\r\nover tcp\r\n")
    assert delivered(postfix, "alice", before + 1)[-1].endswith(b"Subject: tcp\n\nover tcp\n")


def test_binarymime_is_refused(postfix, session_factory):
    """Postfix stores lines: a BODY=BINARYMIME message gets 552 5.6.1 rather than altered octets."""
    session = session_factory(plugins=["rcpt_ok", "queue/postfix-queue %s" % postfix.cleanup_socket],
                              config={"rcpthosts": ["pfq.test"]})
    session.command("EHLO client.test")
    session.command("MAIL FROM:<bob@pfq.test> BODY=BINARYMIME")
    session.command("RCPT TO:<alice@pfq.test>")
    body = b"Subject: bin\r\n\r\n\x00\r\x01\n"
    reply = session.send(b"BDAT %d LAST\r\n%s" % (len(body), body))[-1]
    assert (reply.code, reply.status) == (552, "5.6.1")


@pytest.mark.parametrize("line, fault", [
    ("queue/postfix-queue FLAG_MASK_EXTERNALL", "unknown argument 'FLAG_MASK_EXTERNALL'"),
    ("queue/postfix-queue var/spool/postfix/public/cleanup", "the socket an absolute path"),
    ("queue/postfix-queue /x timeout 0", "timeout '0' is not a positive number"),
    ("queue/postfix-queue /x timeout 40", "would outlast plugin_timeout"),
    ("queue/postfix-queue /x timeout", "'timeout' needs a value"),
])
def test_bad_arguments_stop_start_up(tmp_path, line, fault):
    """A typo in a flag, a relative socket or a bad timeout stops start-up with the fix (qpsmtpd ignored them)."""
    with pytest.raises(ConfigError, match=re.escape(fault)):
        make_smtpd(tmp_path, plugins=[line])


def test_record_encoding_and_line_splitting():
    """Lengths are little-endian base 128; long lines become L records then an N; LF ends a line."""
    assert cleanup.record(b"N", b"") == b"N\x00"
    assert cleanup.record(b"N", b"a" * 127)[:2] == b"N\x7f"
    assert cleanup.record(b"N", b"a" * 128)[:3] == b"N\x80\x01"
    assert cleanup.record(b"N", b"a" * 300)[:3] == b"N\xac\x02"
    long_line = b"y" * (cleanup.LINE_CHUNK * 2 + 5)
    records = list(cleanup.content_records([b"one\ntw", b"o\n\n" + long_line[:3000], long_line[3000:] + b"\nend"]))
    assert records[:3] == [cleanup.record(b"N", b"one"), cleanup.record(b"N", b"two"), cleanup.record(b"N", b"")]
    assert [r[:1] for r in records[3:]] == [b"L", b"L", b"N", b"N"]
    assert b"".join(r[2:] if r[1] < 0x80 else r[3:] for r in records[3:6]) == long_line
    assert records[-1] == cleanup.record(b"N", b"end")


@pytest.mark.parametrize("status, reason, expected", [
    (0, "", ("ok", "")),
    (1 << 8, "4.7.1 later", ("temporary", "4.7.1 later")),
    ((1 << 8) | (1 << 3), "", ("temporary", "4.7.1 service unavailable")),
    (1 << 2, "", ("permanent", "5.3.4 message file too big")),
    (1 << 3, "5.7.0 spam\r\nX: y", ("permanent", "5.7.0 spam X: y")),
    (1 << 3, "4.7.0 odd", ("permanent", "5.7.1 odd")),
    (1 << 12, "", ("unknown", "4.3.0 queue file write error")),
])
def test_status_mapping(status, reason, expected):
    """CLEANUP_STAT_* bits map as Postfix's smtpd maps them; temporary bits win; a reason of the wrong class
    keeps its text under the right code; no line break reaches the client."""
    assert cleanup.verdict(status, reason) == expected


# -- Postfix as the first hop, relaying through us ---------------------------------------------------


def relay_into_postfix(postfix, recipient, message, sender="bob@pfq.test"):
    with smtplib.SMTP("127.0.0.1", postfix.smtpd_port, timeout=30) as client:
        client.sendmail(sender, [recipient], message.replace(b"\n", b"\r\n"))


def test_postfix_relays_through_us_byte_exact_over_starttls_with_pipelining(postfix, relay_target):
    """Postfix's smtp client delivers to us over STARTTLS, pipelining MAIL, RCPT and DATA; our Maildir holds
    its Received and ours above the message, byte for byte."""
    message = MESSAGE.replace(b"alice@pfq.test", b"carol@relay.test")
    relay_into_postfix(postfix, "carol@relay.test", message)
    content = relayed(postfix, relay_target, "carol@relay.test")
    trace = split_trace(content, message)
    assert header_names(trace) == [b"Return-Path", b"Delivered-To", b"Received", b"Received"]
    ours, theirs = re.findall(rb"Received: .*?(?=\nReceived: |\n\Z)", trace, re.S)
    assert b"by relay.qpg.test" in ours and b"postfix.test" in ours and b"ESMTPS" in ours
    assert b"by postfix.test (Postfix)" in theirs
    log = postfix.log
    assert re.search(r"TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]:%d" % relay_target.port, log), log
    assert re.search(r"tls: pass, TLSv1\.[23]", relay_target.log)
    # Postfix's debug log shows what it sends (">") and reads ("<"): MAIL, RCPT and DATA go out before
    # the first reply to any of them comes back.
    peer = re.escape("127.0.0.1[127.0.0.1]:%d" % relay_target.port)
    dialogue = re.findall(r"postfix/smtp\[\d+\]: ([<>]) %s: (MAIL FROM|RCPT TO|DATA|\d{3})" % peer, log)
    start = dialogue.index((">", "MAIL FROM"))
    assert dialogue[start:start + 3] == [(">", "MAIL FROM"), (">", "RCPT TO"), (">", "DATA")], dialogue


def test_a_4xx_from_us_keeps_the_message_in_postfix_queue(postfix, relay_target):
    """Our 450 at RCPT: Postfix defers the message and keeps it queued with our reply as the reason."""
    relay_into_postfix(postfix, "defer-me@relay.test", b"Subject: keep me\n\nqueued\n")
    assert wait_for(lambda: "pfq relay target says later" in postfix.queue(), 20), postfix.queue() + postfix.log[-3000:]
    assert "defer-me@relay.test" in postfix.queue()


def test_a_5xx_from_us_makes_postfix_bounce(postfix, relay_target):
    """Our 550 at RCPT: Postfix bounces to the sender (bob, a Maildir here) quoting our reply, and keeps nothing."""
    before = len(postfix.mailbox("bob"))
    relay_into_postfix(postfix, "refuse-me@relay.test", b"Subject: bounce me\n\nrefused\n")
    bounce = delivered(postfix, "bob", before + 1)[-1]
    assert b"Undelivered Mail Returned to Sender" in bounce
    assert b"pfq relay target says no such user" in bounce and b"refuse-me@relay.test" in bounce
    assert "refuse-me@relay.test" not in postfix.queue()
