"""queue/smtp-forward against a real Postfix as the next hop (a private instance this module starts).

The Postfix is tests/daemons/postfix_private.py's (``postfix -c DIR start``,
its own main.cf and master.cf in a temporary directory, virtual delivery into
one Maildir per user of ``forward-test.example``), with smtpd listeners of
this module's own on free 127.0.0.1 ports, STARTTLS with a certificate made
here, XCLIENT for 127.0.0.1, a refused and a deferred address, body_checks;
mail for anywhere else is discarded (``default_transport = discard``):
nothing leaves.  AUTH and BDAT are tested against a qpgevent LiveServer as
the smarthost: this Postfix has no SASL server configured (Cyrus or Dovecot
would be a daemon more), and Postfix does not take BINARYMIME.
"""
import contextlib
import shutil
import smtplib
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from daemons.postfix_private import PostfixInstance
from qpgevent.errors import ConfigErrors
from qpgevent.testing import LiveServer, RawClient, TestSession, free_port, make_smtpd, wait_for, write_config

DOMAIN = "forward-test.example"
USERS = ("alice", "bob", "carol")

pytestmark = pytest.mark.skipif(shutil.which("postfix") is None,
                                reason="postfix is not installed (tests/run installs it)")

# smtpd listeners besides the instance's own (which is "main"): name -> -o options
SERVICES = {
    "reuse": ["syslog_name=postfix-reuse"],
    "short": ["smtpd_timeout=2s"],
    "plain": ["smtpd_tls_security_level=none", "smtputf8_enable=no",
              "smtpd_discard_ehlo_keywords=8bitmime,dsn,xclient"],
    "small": ["syslog_name=postfix-small", "message_size_limit=110000"],  # over header_size_limit (102400)
    "login": ["syslog_name=postfix-login", "smtpd_sasl_authenticated_header=yes"],
    # the listener docs/operations.md ("qpgevent in front of Postfix over SMTP") tells admins to add
    "documented": ["smtpd_authorized_xclient_hosts=127.0.0.1", "smtpd_client_restrictions=",
                   "smtpd_helo_restrictions=", "smtpd_sender_restrictions=", "mynetworks=0.0.0.0/0,[::]/0",
                   "smtpd_relay_restrictions=permit_mynetworks,reject_unauth_destination",
                   "smtpd_recipient_restrictions=permit_mynetworks,reject_unauth_destination",
                   "smtpd_tls_security_level=none"],
}


@pytest.fixture(scope="session")
def postfix():
    """The next hop; ``ports`` by listener name ("main" too), ``cert`` the CA file that verifies it."""
    base = Path(tempfile.mkdtemp(prefix="qpg-forward-postfix-"))  # not under pytest's 0700 tmp: postfix reads it
    base.chmod(0o755)
    tls = base / "tls"
    tls.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(tls / "key.pem"), "-out", str(tls / "cert.pem")],
                   check=True, capture_output=True, timeout=60)
    (tls / "body_checks").write_text("/^REJECTME/ REJECT this body is not wanted here\n")
    restrictions = ("check_recipient_access inline:{ {refused@%s = 550 5.1.1 no such user here}, "
                    "{deferred@%s = 450 4.2.0 mailbox busy} }, permit_mynetworks, reject_unauth_destination"
                    % (DOMAIN, DOMAIN))
    instance = PostfixInstance(base, domain=DOMAIN, users=USERS, smtpd_services=SERVICES, main_cf=[
        "mynetworks = 127.0.0.1/32", "local_header_rewrite_clients =",
        "default_transport = discard:no mail leaves this test", "relay_transport = discard:no mail leaves this test",
        "smtpd_authorized_xclient_hosts = 127.0.0.1", "smtpd_recipient_restrictions = " + restrictions,
        "body_checks = regexp:%s/body_checks" % tls, "smtpd_tls_security_level = may",
        "smtpd_tls_cert_file = %s/cert.pem" % tls, "smtpd_tls_key_file = %s/key.pem" % tls,
        "smtpd_tls_received_header = yes", "syslog_name = postfix-main",
    ])
    instance.ports["main"] = instance.smtpd_port
    instance.cert = tls / "cert.pem"
    try:
        yield instance.start()
    finally:
        instance.remove()


def messages(postfix, user):
    return [path.read_bytes() for path in postfix.mailbox(user)]


@pytest.fixture
def forward(live_server, postfix):
    """``forward(ini_lines, service="main", plugin_args=None)`` -> a LiveServer forwarding to that Postfix listener."""
    def start(ini=(), service="main", plugin_args=None, plugins=("rcpt_ok",), config=None):
        args = plugin_args if plugin_args is not None else "127.0.0.1 %d" % postfix.ports[service]
        values = {"rcpthosts": [DOMAIN, "other-route.test", "auth-route.test"], "smtp_forward.ini": list(ini)}
        values.update(config or {})
        return live_server(plugins=[*plugins, "queue/smtp-forward " + args], config=values)
    return start


@contextlib.contextmanager
def raw_client(server):
    client = RawClient(server.address, timeout=30)
    try:
        yield client
    finally:
        client.close()


def ready_for_data(client):
    """Greeting, EHLO, MAIL from bob, RCPT to carol, DATA: the client may send carol's message now."""
    client.reply()
    client.command("EHLO client.test")
    client.command("MAIL FROM:<bob@%s>" % DOMAIN)
    client.command("RCPT TO:<carol@%s>" % DOMAIN)
    assert client.command("DATA").code == 354


def trusted(postfix):
    return ["tls_ca_file = %s" % postfix.cert]


def delivered(postfix, user, subject):
    """The one message with this subject in the user's Maildir, once Postfix has delivered it."""
    def found():
        return [m for m in messages(postfix, user) if b"\nSubject: %s\n" % subject.encode() in m]
    assert wait_for(found, seconds=20), postfix.log[-3000:]
    [stored] = found()
    return stored


def message(subject, body="Hello.\n"):
    """A message as our client sends it: CRLF line ends, UTF-8."""
    return text(subject, body).replace("\n", "\r\n").encode("utf-8")


def text(subject, body="Hello.\n"):
    """The message as Postfix's Maildir stores it: LF line ends."""
    return ("From: Bob <bob@%s>\nTo: Alice <alice@%s>\nSubject: %s\nDate: Thu, 03 Dec 2026 10:00:00 +0000\n"
            "Message-ID: <%s@%s>\n\n%s" % (DOMAIN, DOMAIN, subject, subject.replace(" ", "-"), DOMAIN, body))


# -- the message arrives, byte for byte ---------------------------------------------------------
def test_message_reaches_the_postfix_mailbox_byte_exact(forward, postfix):
    """A message with dot lines, 8-bit text and a long line arrives in Postfix's Maildir as sent, plus trace headers."""
    server = forward(trusted(postfix))
    body = ".leading dot\n..two dots\n.\nna\xefve caf\xe9\n" + "x" * 1500 + "\nlast line\n"
    original = text("byte exact", body)
    with smtplib.SMTP(*server.address, timeout=30) as client:
        client.ehlo("client.test")
        client.sendmail("bob@" + DOMAIN, ["alice@" + DOMAIN],
                        message("byte exact", body), mail_options=["BODY=8BITMIME"])
    stored = delivered(postfix, "alice", "byte exact")
    theirs, ours = stored.split(original.encode("utf-8"))
    assert ours == b""  # the message is the end of the file, byte for byte
    theirs, ours = theirs.split(b"\nReceived: from [127.0.0.1] (HELO client.test)")
    assert theirs.startswith(b"Return-Path: <bob@%s>\n" % DOMAIN.encode())
    assert b"\nReceived: from mx.test (localhost [127.0.0.1])" in theirs  # Postfix's trace header
    assert b"(using TLS" in theirs  # STARTTLS to the next hop, its certificate checked against tls_ca_file
    assert b"by mx.test (qpgevent" in ours  # ours


def test_the_client_hears_the_next_hop_queue_id(forward, postfix):
    """The 250 after the message carries Postfix's 'queued as' (250 only once Postfix has it)."""
    server = forward(trusted(postfix))
    with raw_client(server) as client:
        ready_for_data(client)
        reply = client.command(message("queue id").decode() + ".")
    assert reply.code == 250 and "queued as" in reply.text, reply
    delivered(postfix, "carol", "queue id")


# -- failures: 451 and nothing lost, or the refusal passed on --------------------------------------
def test_next_hop_down_gives_451_and_the_client_keeps_the_message(forward):
    """With nothing listening at the next hop the client gets 451 4.4.1 at the end of DATA."""
    port = free_port()
    server = forward(plugin_args="127.0.0.1 %d" % port)
    with smtplib.SMTP(*server.address, timeout=30) as client:
        with pytest.raises(smtplib.SMTPDataError) as caught:
            client.sendmail("bob@" + DOMAIN, ["alice@" + DOMAIN], message("down"))
    assert (caught.value.smtp_code, caught.value.smtp_error) == (451, b"4.4.1 next hop not reachable; try again later")
    assert "cannot reach next hop default (127.0.0.1 port %d): ConnectionRefusedError" % port in server.log


@contextlib.contextmanager
def stand_in(serve):
    """A next hop written here: ``serve(connection)`` talks to the one connection it accepts; yields the port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)

    def accept():
        with contextlib.suppress(OSError):
            connection, _ = listener.accept()
            with connection:
                connection.settimeout(30)
                serve(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(5)


@pytest.fixture
def silent_next_hop():
    """A stand-in next hop that greets and answers EHLO, then never answers again (a hung server)."""
    seen = []

    def serve(connection):
        connection.sendall(b"220 silent.test ESMTP\r\n")
        seen.append(connection.recv(1000))
        connection.sendall(b"250 silent.test\r\n")
        while True:
            data = connection.recv(1000)
            if not data:
                seen.append(b"closed")
                return
            seen.append(data)

    with stand_in(serve) as port:
        yield port, seen


def test_a_next_hop_that_stops_answering_gives_451_within_the_timeout(forward, silent_next_hop):
    """timeout = 1: the wait for the MAIL reply ends after a second, the client gets 451, the connection is dropped."""
    port, seen = silent_next_hop
    server = forward(["timeout = 1", "starttls = no"], plugin_args="127.0.0.1 %d" % port)
    started = time.monotonic()
    with smtplib.SMTP(*server.address, timeout=30) as client:
        with pytest.raises(smtplib.SMTPDataError) as caught:
            client.sendmail("bob@" + DOMAIN, ["alice@" + DOMAIN], message("silent"))
    assert (caught.value.smtp_code, caught.value.smtp_error[:5]) == (451, b"4.4.2")
    assert time.monotonic() - started < 10
    assert wait_for(lambda: seen[-1:] == [b"closed"], 10), seen
    assert seen[1].startswith(b"MAIL FROM:<bob@%s>" % DOMAIN.encode())


def test_unverifiable_certificate_gives_451(forward, postfix):
    """tls_verify on (the default) without the CA that signed Postfix's certificate: 451, nothing sent in clear."""
    server = forward()
    with smtplib.SMTP(*server.address, timeout=30) as client:
        with pytest.raises(smtplib.SMTPDataError) as caught:
            client.sendmail("bob@" + DOMAIN, ["carol@" + DOMAIN], message("unverified"))
    assert (caught.value.smtp_code, caught.value.smtp_error[:5]) == (451, b"4.7.5")
    assert "CERTIFICATE_VERIFY_FAILED" in server.log


def test_tls_verify_off_accepts_any_certificate(forward, postfix):
    """tls_verify = no: the self-signed certificate is taken and the message goes over TLS."""
    server = forward(["tls_verify = no"])
    with smtplib.SMTP(*server.address, timeout=30) as client:
        client.sendmail("bob@" + DOMAIN, ["bob@" + DOMAIN], message("any certificate"))
    assert b"(using TLS" in delivered(postfix, "bob", "any certificate")


def test_every_recipient_refused_gives_552_with_the_next_hop_text(forward, postfix):
    """Postfix refusing the only recipient with 550 5.1.1: our client gets 552 5.1.1 and Postfix's reason."""
    server = forward(trusted(postfix))
    with smtplib.SMTP(*server.address, timeout=30) as client:
        with pytest.raises(smtplib.SMTPDataError) as caught:
            client.sendmail("bob@" + DOMAIN, ["refused@" + DOMAIN], message("refused"))
    assert caught.value.smtp_code == 552
    assert caught.value.smtp_error.startswith(b"5.1.1 next hop refused recipient <refused@%s>: " % DOMAIN.encode())
    assert b"no such user here" in caught.value.smtp_error


def test_a_temporarily_refused_recipient_defers_the_whole_message(forward, postfix):
    """One recipient deferred (450) by Postfix: 451 4.2.0 for the message, and nobody gets a copy yet."""
    server = forward(trusted(postfix))
    with smtplib.SMTP(*server.address, timeout=30) as client:
        with pytest.raises(smtplib.SMTPDataError) as caught:
            client.sendmail("bob@" + DOMAIN, ["alice@" + DOMAIN, "deferred@" + DOMAIN], message("deferred one"))
    assert (caught.value.smtp_code, caught.value.smtp_error[:5]) == (451, b"4.2.0")
    time.sleep(1)
    assert not any(b"deferred one" in m for m in messages(postfix, "alice"))


def test_a_permanently_refused_recipient_gets_a_report_the_others_the_message(forward, postfix):
    """alice accepted, refused@ refused by Postfix after our 250: alice gets it, bob (sender) a DSN naming refused@."""
    server = forward(trusted(postfix))
    with smtplib.SMTP(*server.address, timeout=30) as client:
        refused = client.sendmail("carol@" + DOMAIN, ["alice@" + DOMAIN, "refused@" + DOMAIN], message("partly"))
    assert refused == {}
    delivered(postfix, "alice", "partly")
    report = delivered(postfix, "carol", "Undelivered Mail Returned to Sender")
    assert b"Return-Path: <>" in report
    assert b"Final-Recipient: rfc822; refused@%s" % DOMAIN.encode() in report
    assert b"Status: 5.1.1" in report and b"Subject: partly" in report


def test_a_refused_message_gives_552_with_the_next_hop_text(forward, postfix):
    """Postfix's body_checks refusing the message after the dot: 552 5.7.1 with its text."""
    server = forward(trusted(postfix))
    with smtplib.SMTP(*server.address, timeout=30) as client:
        with pytest.raises(smtplib.SMTPDataError) as caught:
            client.sendmail("bob@" + DOMAIN, ["alice@" + DOMAIN], message("bad body", "REJECTME please\n"))
    assert caught.value.smtp_code == 552
    assert caught.value.smtp_error.startswith(b"5.7.1 next hop refused the message: ")
    assert b"this body is not wanted here" in caught.value.smtp_error


def test_rcpt_check_passes_the_next_hop_refusal_on_at_rcpt(forward, postfix):
    """rcpt_check = yes: Postfix's 550/450 for a recipient reaches our client at RCPT, a good one is accepted."""
    server = forward(trusted(postfix) + ["rcpt_check = yes"])
    with raw_client(server) as client:
        client.reply()
        client.command("EHLO client.test")
        client.command("MAIL FROM:<bob@%s>" % DOMAIN)
        refused = client.command("RCPT TO:<refused@%s>" % DOMAIN)
        deferred = client.command("RCPT TO:<deferred@%s>" % DOMAIN)
        good = client.command("RCPT TO:<alice@%s>" % DOMAIN)
    assert (refused.code, refused.status) == (550, "5.1.1") and "no such user here" in refused.text
    assert (deferred.code, deferred.status) == (450, "4.2.0") and "mailbox busy" in deferred.text
    assert good.code == 250


# -- XCLIENT, reuse -------------------------------------------------------------------------------
def test_xclient_makes_postfix_name_the_original_client(forward, postfix):
    """qpsmtpd's `xclient` flag: Postfix's Received names the client's HELO and address, not ours."""
    server = forward(trusted(postfix), plugin_args="127.0.0.1 %d xclient" % postfix.ports["main"])
    with smtplib.SMTP(*server.address, timeout=30, source_address=("127.0.0.2", 0)) as client:
        client.ehlo("origin.test")
        client.sendmail("bob@" + DOMAIN, ["alice@" + DOMAIN], message("xclient"))
    stored = delivered(postfix, "alice", "xclient")
    postfix_received = stored.split(b"\nReceived: ", 2)[1]
    assert postfix_received.startswith(b"from origin.test (unknown [127.0.0.2])"), postfix_received


def test_the_documented_front_of_postfix_setup(forward, postfix):
    """operations.md's plugins line, smtp_forward.ini and Postfix listener: delivered, the real client named.

    Postfix also takes a recipient it relays (qpgevent accepted it), though after XCLIENT it judges the
    real client, which is outside Postfix's mynetworks (127.0.0.1 only).
    """
    server = forward(["starttls = no", "pool_size = 8"],
                     plugin_args="127.0.0.1 %d xclient" % postfix.ports["documented"])
    with smtplib.SMTP(*server.address, timeout=30, source_address=("127.0.0.3", 0)) as client:
        client.ehlo("client.example")
        client.sendmail("bob@" + DOMAIN, ["carol@" + DOMAIN], message("documented"))
        client.sendmail("bob@" + DOMAIN, ["someone@other-route.test"], message("relayed by postfix"))
    stored = delivered(postfix, "carol", "documented")
    assert stored.split(b"\nReceived: ", 2)[1].startswith(b"from client.example (unknown [127.0.0.3])")


def test_connection_is_reused_across_messages(forward, postfix):
    """Two messages from two client sessions travel on one connection to Postfix (RSET between)."""
    server = forward(trusted(postfix), service="reuse")
    for n in range(2):
        with smtplib.SMTP(*server.address, timeout=30) as client:
            client.sendmail("bob@" + DOMAIN, ["carol@" + DOMAIN], message("reuse %d" % n))
    server.stop()  # closes the pooled connection: Postfix logs its summary
    assert wait_for(lambda: " mail=2 " in _disconnects(postfix, "reuse"), 20), \
        _disconnects(postfix, "reuse")
    assert " rset=1 " in _disconnects(postfix, "reuse")


def _disconnects(postfix, service):
    return "\n".join(line for line in postfix.log.splitlines() if "postfix-%s/smtpd" % service in line
                     and "disconnect from" in line)


def test_a_dead_pooled_connection_is_replaced(forward, postfix):
    """Postfix drops the idle connection (smtpd_timeout 2s); the next message goes on a fresh one."""
    server = forward(trusted(postfix), service="short")
    with smtplib.SMTP(*server.address, timeout=30) as client:
        client.sendmail("bob@" + DOMAIN, ["alice@" + DOMAIN], message("before the timeout"))
        time.sleep(3.5)
        client.sendmail("bob@" + DOMAIN, ["alice@" + DOMAIN], message("after the timeout"))
    assert wait_for(lambda: sum(b"the timeout" in m for m in messages(postfix, "alice")) >= 2, 20)
    assert "is gone; opening a new one" in server.log


# -- extensions ------------------------------------------------------------------------------------
def test_dsn_parameters_reach_postfix(forward, postfix):
    """DSN is advertised; NOTIFY=SUCCESS and ENVID pass on, so Postfix's success report names our ENVID."""
    server = forward(trusted(postfix))
    with smtplib.SMTP(*server.address, timeout=30) as client:
        client.ehlo("client.test")
        assert client.has_extn("dsn")
        client.sendmail("bob@" + DOMAIN, ["carol@" + DOMAIN], message("dsn"),
                        mail_options=["RET=HDRS", "ENVID=qpg-forward-1"],
                        rcpt_options=["NOTIFY=SUCCESS", "ORCPT=rfc822;carol@" + DOMAIN])
    assert wait_for(lambda: any(b"Original-Envelope-Id: qpg-forward-1" in m for m in messages(postfix, "bob")), 20), \
        postfix.log[-2000:]
    [report] = [m for m in messages(postfix, "bob") if b"Original-Envelope-Id: qpg-forward-1" in m]
    assert b"Action: delivered" in report and b"Original-Recipient: rfc822;carol@" + DOMAIN.encode() in report


def test_smtputf8_is_passed_on(forward, postfix):
    """An internationalised sender goes to Postfix with SMTPUTF8 and is delivered."""
    server = forward(trusted(postfix))
    with smtplib.SMTP(*server.address, timeout=30) as client:
        client.sendmail("jos\xe9@" + DOMAIN, ["alice@" + DOMAIN], message("utf8"),
                        mail_options=["SMTPUTF8"])
    assert delivered(postfix, "alice", "utf8").startswith("Return-Path: <jos\xe9@".encode())


@pytest.mark.parametrize("sender, options, rcpt_options, body, reply", [
    ("jos\xe9@" + DOMAIN, ["SMTPUTF8"], [], "plain\n", (552, b"5.6.7")),
    ("bob@" + DOMAIN, ["BODY=8BITMIME"], [], "caf\xe9\n", (552, b"5.6.3")),
    ("bob@" + DOMAIN, [], ["NOTIFY=SUCCESS"], "plain\n", (552, b"5.3.3")),
    ("bob@" + DOMAIN, ["BODY=8BITMIME", "SMTPUTF8"], ["NOTIFY=FAILURE"], "plain ascii\n", None),
])
def test_extensions_the_next_hop_lacks(forward, postfix, sender, options, rcpt_options, body, reply):
    """A next hop without SMTPUTF8, 8BITMIME, DSN: a message that needs them is refused, one that does not goes."""
    server = forward(service="plain")
    subject = "lacks %s" % (options + rcpt_options)
    with smtplib.SMTP(*server.address, timeout=30) as client:
        try:
            client.sendmail(sender, ["bob@" + DOMAIN], message(subject, body), options, rcpt_options)
        except smtplib.SMTPDataError as exc:
            assert (exc.smtp_code, exc.smtp_error[:5]) == reply
        else:
            assert reply is None
            delivered(postfix, "bob", subject)


# -- a qpgevent smarthost: AUTH, BDAT, routes ------------------------------------------------------
@pytest.fixture
def smarthost(tmp_path):
    """A qpgevent server with auth/auth_flat_file and a Maildir: a real SMTP server taking AUTH and BINARYMIME.

    Request it before ``forward``: our server, holding a pooled connection to it, must stop first.
    """
    directory = tmp_path / "smarthost"
    config = write_config(directory / "config", {
        "me": "smarthost.test", "rcpthosts": ["other-route.test"], "flat_auth_pw": ["us@smarthost.test:s3cret"],
        "tls_before_auth": "0", "auth_failure_delay": "0", "spool_dir": str(directory / "spool"),
        "plugins": ["auth/auth_flat_file", "rcpt_ok", "queue/maildir %s" % (directory / "Maildir")]})
    with LiveServer(config, cwd=directory) as server:
        server.maildir = directory / "Maildir" / "new"
        yield server


def test_auth_to_a_smarthost(smarthost, forward):
    """user/password in the ini: we AUTH, the smarthost lets us relay, the message arrives there."""
    server = forward(["user = us@smarthost.test", "password = s3cret", "starttls = no"],
                     plugin_args="127.0.0.1 %d" % smarthost.port)
    with smtplib.SMTP(*server.address, timeout=30) as client:
        client.sendmail("bob@" + DOMAIN, ["someone@auth-route.test"], message("auth"))
    [stored] = [p.read_bytes() for p in smarthost.maildir.iterdir()]
    assert b"Subject: auth" in stored and b"ESMTPA" in stored


def test_wrong_smarthost_password_gives_451(smarthost, forward):
    """AUTH refused by the smarthost is our configuration's fault: 451, the client keeps the message."""
    server = forward(["user = us@smarthost.test", "password = wrong", "starttls = no"],
                     plugin_args="127.0.0.1 %d" % smarthost.port)
    with smtplib.SMTP(*server.address, timeout=30) as client:
        with pytest.raises(smtplib.SMTPDataError) as caught:
            client.sendmail("bob@" + DOMAIN, ["someone@auth-route.test"], message("bad auth"))
    assert caught.value.smtp_code == 451 and b"refused our AUTH" in caught.value.smtp_error


def test_no_password_in_clear_when_tls_is_missing(smarthost, forward):
    """A smarthost that does not offer STARTTLS (stripped, say) gets no password unless starttls = no: 451."""
    server = forward(["user = us@smarthost.test", "password = s3cret"], plugin_args="127.0.0.1 %d" % smarthost.port)
    with smtplib.SMTP(*server.address, timeout=30) as client:
        with pytest.raises(smtplib.SMTPDataError) as caught:
            client.sendmail("bob@" + DOMAIN, ["someone@auth-route.test"], message("no clear password"))
    assert caught.value.smtp_code == 451 and b"password is not sent in clear" in caught.value.smtp_error


def test_binary_message_goes_by_bdat_byte_exact(smarthost, forward):
    """BODY=BINARYMIME to a next hop that takes it: BDAT, the octets (lone CR, NUL) arrive untouched."""
    server = forward(["starttls = no", "[smarthost]", "host = 127.0.0.1", "port = %d" % smarthost.port,
                      "domains = other-route.test"])
    body = b"binary \x00\r lone CR\n lone LF\r\n.dot\r\nend\r\n"
    head = b"Subject: binary\r\nMIME-Version: 1.0\r\n\r\n"
    with raw_client(server) as client:
        client.reply()
        client.command("EHLO client.test")
        assert client.command("MAIL FROM:<bob@%s> BODY=BINARYMIME" % DOMAIN).code == 250
        assert client.command("RCPT TO:<x@other-route.test>").code == 250
        client.send(b"BDAT %d LAST\r\n" % len(head + body) + head + body)
        reply = client.reply()
    assert reply.code == 250, reply
    [stored] = [p.read_bytes() for p in smarthost.maildir.iterdir()]
    assert stored.endswith(head + body)


def test_binary_message_to_postfix_is_refused(forward, postfix):
    """Postfix does not take BINARYMIME, and we do not convert: 552 5.6.3."""
    server = forward(trusted(postfix))
    head_body = b"Subject: binary\r\n\r\nbody\r\n"
    with raw_client(server) as client:
        client.reply()
        client.command("EHLO client.test")
        client.command("MAIL FROM:<bob@%s> BODY=BINARYMIME" % DOMAIN)
        client.command("RCPT TO:<alice@%s>" % DOMAIN)
        client.send(b"BDAT %d LAST\r\n" % len(head_body) + head_body)
        reply = client.reply()
    assert (reply.code, reply.status) == (552, "5.6.3"), reply


def test_recipients_for_another_route_wait_for_their_own_transaction(postfix, smarthost, forward):
    """A recipient whose domain goes elsewhere than the first recipient's gets 452 4.5.3; alone it is routed there."""
    server = forward(trusted(postfix) + ["[smarthost]", "host = 127.0.0.1", "port = %d" % smarthost.port,
                                         "domains = .route.test, other-route.test", "starttls = no"])
    with raw_client(server) as client:
        client.reply()
        client.command("EHLO client.test")
        client.command("MAIL FROM:<bob@%s>" % DOMAIN)
        assert client.command("RCPT TO:<alice@%s>" % DOMAIN).code == 250
        other = client.command("RCPT TO:<x@other-route.test>")
    assert (other.code, other.status) == (452, "4.5.3"), other
    with smtplib.SMTP(*server.address, timeout=30) as client:
        client.sendmail("bob@" + DOMAIN, ["x@other-route.test"], message("routed"))
    assert [b"Subject: routed" in p.read_bytes() for p in smarthost.maildir.iterdir()] == [True]


def test_domains_route_exact_names_and_dotted_subdomains(tmp_path):
    """`example.org` takes that domain, `.route.test` its subdomains only; the rest goes to the default."""
    smtpd = make_smtpd(tmp_path, ["rcpt_ok", "queue/smtp-forward 127.0.0.1 2525"], {
        "rcpthosts": ["default.test", "example.org", "route.test", "a.route.test"],
        "smtp_forward.ini": ["[other]", "host = 127.0.0.1", "port = 2526", "domains = example.org, .route.test"]})
    session = TestSession(smtpd)
    session.command("EHLO client.test")
    session.command("MAIL FROM:<a@sender.test>")
    assert session.command("RCPT TO:<x@default.test>")[-1].code == 250
    assert session.command("RCPT TO:<x@route.test>")[-1].code == 250  # not a subdomain of itself: the default
    assert session.command("RCPT TO:<x@a.route.test>")[-1].code == 452
    assert session.command("RCPT TO:<x@example.org>")[-1].code == 452
    session.command("RSET")
    session.command("MAIL FROM:<a@sender.test>")
    assert session.command("RCPT TO:<x@A.Route.Test>")[-1].code == 250
    assert session.command("RCPT TO:<y@example.org>")[-1].code == 250
    assert session.command("RCPT TO:<y@default.test>")[-1].code == 452


# -- configuration ---------------------------------------------------------------------------------
@pytest.mark.parametrize("spelling, plugin", [
    ("queue/smtp_forward", "queue/smtp-forward"), ("queue/qmail_queue", "queue/qmail-queue"),
    ("queue/postfix_queue", "queue/postfix-queue"), ("queue/exim_bsmtp", "queue/exim-bsmtp"),
])
def test_underscore_spellings_load_the_queue_plugins_silently(tmp_path, spelling, plugin):
    """The seed talk's `queue/qmail_queue` etc. load the hyphenated plugin, with no old-name warning."""
    mine = tmp_path / "mine"
    (mine / "queue").mkdir(parents=True)
    (mine / (plugin + ".py")).write_text('"""A stand-in %s."""\n\n\ndef hook_queue(self, transaction):\n    pass\n'
                                         % plugin)
    smtpd = make_smtpd(tmp_path, ["rcpt_ok", spelling], {"plugin_dirs": str(mine)})
    assert (smtpd.plugins[1].name, smtpd.plugins[1].path) == (spelling, str(mine / (plugin + ".py")))
    assert smtpd.warnings == []


def test_the_real_plugin_loads_under_its_underscore_name(tmp_path):
    """`queue/smtp_forward HOST PORT` is this plugin."""
    smtpd = make_smtpd(tmp_path, ["rcpt_ok", "queue/smtp_forward 127.0.0.1 2525"])
    assert Path(smtpd.plugins[1].path).name == "smtp-forward.py" and smtpd.warnings == []


@pytest.mark.parametrize("line, ini, problem", [
    ("queue/smtp-forward", [], "no default destination: give HOST [PORT] as arguments"),
    ("queue/smtp-forward 127.0.0.1", ["[other]", "host = 10.0.0.1"],
     "section [other] has no domains, so it is a second default destination"),
    ("queue/smtp-forward 127.0.0.1", ["[other]", "domains = a.test"], "other.host: missing"),
    ("queue/smtp-forward 127.0.0.1 twentyfive", [], "port takes a whole number"),
    ("queue/smtp-forward 127.0.0.1", ["starttls = sometimes"], "starttls: the value \"sometimes\" is unacceptable"),
    ("queue/smtp-forward 127.0.0.1", ["tls_ca_file = /nonexistent/ca.pem"],
     "tls_ca_file '/nonexistent/ca.pem' of destination default does not load"),
])
def test_bad_configuration_stops_the_start_up(tmp_path, line, ini, problem):
    """A missing or doubled default, a section without host, a bad value: start-up stops naming the problem."""
    with pytest.raises(ConfigErrors) as caught:
        make_smtpd(tmp_path, ["rcpt_ok", line], {"smtp_forward.ini": ini})
    assert problem in str(caught.value), str(caught.value)


# -- SIZE (RFC 1870) and XCLIENT LOGIN --------------------------------------------------------------
def _smtpd_log(postfix, service, start):
    """The lines Postfix's ``service`` listener logged since the log was ``start`` characters long."""
    return [line for line in postfix.log[start:].splitlines() if "postfix-%s/smtpd" % service in line]


def _mail_commands(postfix, service, start):
    """The MAIL commands the listener received since ``start`` (debug_peer_list logs every command)."""
    return [line.split(": < ", 1)[1] for line in _smtpd_log(postfix, service, start)
            if ": < " in line and "MAIL FROM:" in line]


def test_size_of_the_message_as_sent_reaches_postfix(forward, postfix):
    """Postfix offers SIZE: MAIL carries SIZE= with the octets we then send (CRLF, before dot-stuffing)."""
    server = forward(trusted(postfix), service="small")
    start = len(postfix.log)
    body = ".dot line\n" + "y" * 3000 + "\n"
    with smtplib.SMTP(*server.address, timeout=30) as client:
        client.ehlo("client.test")
        client.sendmail("bob@" + DOMAIN, ["alice@" + DOMAIN], message("sized", body))
    stored = delivered(postfix, "alice", "sized")
    ours = b"Received: from [127.0.0.1] (HELO client.test)"
    sent = ours + stored.split(b"\n" + ours)[1]  # from our trace header on, what Postfix received (LF line ends)
    [mail] = _mail_commands(postfix, "small", start)
    assert mail.endswith(" SIZE=%d" % len(sent.replace(b"\n", b"\r\n"))), mail


def test_a_message_over_the_next_hop_size_limit_is_refused_without_sending(forward, postfix):
    """Postfix's SIZE 110000 and a 120 kB message: 552 5.3.4 naming the limit, and no MAIL reaches Postfix."""
    server = forward(trusted(postfix), service="small")
    start = len(postfix.log)
    with smtplib.SMTP(*server.address, timeout=30) as client:
        with pytest.raises(smtplib.SMTPDataError) as caught:
            client.sendmail("bob@" + DOMAIN, ["alice@" + DOMAIN], message("too big", ("z" * 79 + "\n") * 1500))
    assert caught.value.smtp_code == 552
    assert caught.value.smtp_error.startswith(b"5.3.4 message is "), caught.value.smtp_error
    assert b"over the next hop's limit of 110000" in caught.value.smtp_error
    server.stop()  # closes the pooled connection: Postfix logs its summary
    assert wait_for(lambda: any("disconnect from" in line for line in _smtpd_log(postfix, "small", start)), 20)
    [summary] = [line for line in _smtpd_log(postfix, "small", start) if "disconnect from" in line]
    assert " mail=" not in summary and _mail_commands(postfix, "small", start) == [], summary


def test_xclient_login_names_the_authenticated_client_to_postfix(forward, postfix):
    """A client that authenticated to us: XCLIENT LOGIN=<user, xtext> reaches Postfix, one that did not: no LOGIN.

    Postfix takes the login as the SASL user (sasl_method=XCLIENT in its log); with
    smtpd_sasl_authenticated_header = yes its Received header names it too.
    """
    server = forward(trusted(postfix), plugin_args="127.0.0.1 %d xclient" % postfix.ports["login"],
                     plugins=("auth/auth_flat_file", "rcpt_ok"),
                     config={"flat_auth_pw": ["user+1@%s:s3cret" % DOMAIN], "tls_before_auth": "0",
                             "auth_failure_delay": "0"})
    start = len(postfix.log)
    with smtplib.SMTP(*server.address, timeout=30) as client:
        client.ehlo("client.test")
        client.login("user+1@" + DOMAIN, "s3cret")
        client.sendmail("bob@" + DOMAIN, ["alice@" + DOMAIN], message("login"))
    with smtplib.SMTP(*server.address, timeout=30) as client:
        client.sendmail("bob@" + DOMAIN, ["alice@" + DOMAIN], message("no login"))
    assert b"(Authenticated sender: user+1@%s)" % DOMAIN.encode() in delivered(postfix, "alice", "login")
    assert b"Authenticated sender" not in delivered(postfix, "alice", "no login")
    xclients = [line.split(": < ", 1)[1] for line in _smtpd_log(postfix, "login", start) if ": < " in line
                and "XCLIENT " in line]
    assert [x.endswith(" LOGIN=user+2B1@%s" % DOMAIN) for x in xclients] == [True, False], xclients
    assert "LOGIN" not in xclients[1]
    assert any("sasl_method=XCLIENT, sasl_username=user+1@%s" % DOMAIN in line
               for line in _smtpd_log(postfix, "login", start))


# -- the plugin's own budget, not plugin_timeout ----------------------------------------------------
def slow_dot(connection):
    """A next hop that takes 2 s over the final dot, as RFC 5321 4.5.3.2 allows (up to 10 minutes)."""
    reader = connection.makefile("rb")
    connection.sendall(b"220 slow.test ESMTP\r\n")
    while True:
        line = reader.readline()
        if not line or line.upper().startswith(b"QUIT"):
            return
        if line.upper().startswith(b"EHLO"):
            connection.sendall(b"250-slow.test\r\n250 8BITMIME\r\n")
        elif line.upper().startswith(b"DATA"):
            connection.sendall(b"354 go ahead\r\n")
            while reader.readline() not in (b".\r\n", b""):
                pass
            time.sleep(2)
            connection.sendall(b"250 2.0.0 Ok: queued as SLOWDOT\r\n")
        else:
            connection.sendall(b"250 2.0.0 Ok\r\n")


def test_a_next_hop_slow_over_the_dot_outlasts_plugin_timeout(forward):
    """plugin_timeout 1 s, timeout 5 s, the dot answered after 2 s: 250 with its queue id, not a plugin failure."""
    with stand_in(slow_dot) as port:
        server = forward(["timeout = 5", "connect_timeout = 1", "starttls = no"], plugin_args="127.0.0.1 %d" % port,
                         config={"plugin_timeout": "1"})
        with raw_client(server) as client:
            ready_for_data(client)
            started = time.monotonic()
            reply = client.command(message("slow dot").decode() + ".")
            waited = time.monotonic() - started
        server.stop()  # drops the pooled connection: the stand-in's thread ends
    assert reply.code == 250 and "queued as SLOWDOT" in reply.text, reply
    assert 1.9 < waited < 5
