"""tls: STARTTLS and implicit TLS over real sockets, injection, handshake deadlines, versions, reload."""
import select
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

from qpgevent import testing
from qpgevent.testing import RawClient, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
CERT_TOOL = ROOT / "bin" / "qpsmtpd-tls-cert"

# A test-only plugin: XNOTES answers with the TLS connection notes, so a
# client can see what plugins see.
SHOWNOTES = '''
from qpgevent import DECLINED, DONE


def hook_unrecognized_command(self, transaction, verb, rest):
    if verb != "xnotes":
        return DECLINED
    notes = self.qp.connection.notes
    self.qp.respond(250, *["%s=%s" % (key, notes.get(key)) for key in ("tls_enabled", "tls_version", "tls_cipher")])
    return DONE
'''


def make_certs(config_dir, *extra):
    """bin/qpsmtpd-tls-cert: a CA and a certificate for 127.0.0.1 in ``config_dir``/ssl."""
    subprocess.run([sys.executable, str(CERT_TOOL), "--config-dir", str(config_dir), "--host", "127.0.0.1", *extra],
                   check=True, capture_output=True, timeout=30)
    return Path(config_dir) / "ssl"


def write_config(tmp_path, tls_ini=(), plugins=("tls",)):
    """A config dir with fresh certificates, ``plugins`` first, the notes plugin, rcpt_ok and a Maildir."""
    (tmp_path / "testplugins").mkdir(exist_ok=True)
    (tmp_path / "testplugins" / "shownotes.py").write_text(SHOWNOTES)
    make_certs(tmp_path / "config", "--force")
    return {"plugin_dirs": ["testplugins"], "tls.ini": list(tls_ini),
            "plugins": [*plugins, "shownotes", "rcpt_ok", "queue/maildir %s" % (tmp_path / "Maildir")]}


@pytest.fixture
def tls_server(live_server, tmp_path):
    """``tls_server(tls_ini=[...], args=[...])``: certificates made, a server with tls first; ``.ca`` is its CA file.

    After the test, no server may have logged a traceback (a session that crashed instead of ending cleanly).
    """
    servers = []

    def start(tls_ini=(), args=(), plugin="tls"):
        config = write_config(tmp_path, tls_ini, [plugin])
        server = live_server(plugins=config.pop("plugins"), config=config, args=args)
        server.ca = str(tmp_path / "config" / "ssl" / "qpsmtpd-ca.crt")
        servers.append(server)
        return server
    yield start
    for server in servers:
        assert "Traceback" not in server.log, server.log


def start_up_error(tmp_path, args=(), **config):
    """Run the server on a config that must not start; return its exit status and what it printed."""
    values = {"me": "mx.test", "spool_dir": str(tmp_path / "spool"), **write_config(tmp_path, **config)}
    testing.write_config(tmp_path / "config", values)
    result = subprocess.run([sys.executable, str(ROOT / "bin" / "qpsmtpd-server"), "--config-dir",
                             str(tmp_path / "config"), "-l", "127.0.0.1:%d" % free_port(), "-H", *args],
                            capture_output=True, text=True, timeout=20)
    return result.returncode, result.stderr


def trusting(server):
    """A client context that verifies the server against the test CA (name 127.0.0.1)."""
    return ssl.create_default_context(cafile=server.ca)


def delivered(tmp_path):
    """The texts of the messages in the test Maildir."""
    return [path.read_text() for path in (tmp_path / "Maildir" / "new").iterdir()]


def client_hello(context):
    """The bytes of a real TLS ClientHello, made without a connection."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def greeted_and_starting_tls(server, line=b"STARTTLS\r\n"):
    """A RawClient that said EHLO and sent ``line``, with the 220 2.0.0 read."""
    client = RawClient(server.address)
    assert client.reply()[0] == 220
    assert client.command("EHLO client.test")[0] == 250
    client.send(line)
    code, lines = client.reply()
    assert (code, lines[0][:6]) == (220, "2.0.0 ")
    return client



# -- STARTTLS -----------------------------------------------------------------------


def test_starttls_upgrades_and_restarts_the_session(tls_server, tmp_path):
    """STARTTLS is offered, answers 220 2.0.0, and after the handshake the client must EHLO again.

    The second EHLO no longer offers STARTTLS, a second STARTTLS is 503, one
    with an argument 501, one before EHLO 503; the connection notes carry the
    negotiated version and cipher, and the delivered message's Received says
    ESMTPS with that version and cipher.
    """
    server = tls_server()
    with smtplib.SMTP(*server.address, timeout=10) as client:
        assert client.docmd("STARTTLS")[0] == 503
        client.ehlo("client.test")
        assert client.has_extn("starttls")
        code, text = client.docmd("STARTTLS", "now")
        assert (code, text[:6]) == (501, b"5.5.4 ")
        code, text = client.starttls(context=trusting(server))
        assert (code, text[:6]) == (220, b"2.0.0 ")
        version, cipher = client.sock.version(), client.sock.cipher()[0]
        assert version in ("TLSv1.2", "TLSv1.3")
        assert client.docmd("MAIL", "FROM:<a@sender.test>")[0] == 503  # the HELO was forgotten
        client.ehlo("client.test")
        assert not client.has_extn("starttls")
        code, text = client.docmd("STARTTLS")
        assert (code, text[:6]) == (503, b"5.5.1 ")
        assert client.docmd("XNOTES") == (250, ("2.0.0 tls_enabled=True\n2.0.0 tls_version=%s\n2.0.0 tls_cipher=%s"
                                                % (version, cipher)).encode())
        assert client.sendmail("a@sender.test", ["u@example.com"], "Subject: tls\r\n\r\nsecret\r\n") == {}
    [message] = delivered(tmp_path)
    assert "with ESMTPS (%s %s encrypted);" % (version, cipher) in message


def test_ca_argument_sends_the_chain(tls_server):
    """With the CA argument the server sends its certificate with the CA's; without it, only its own."""
    for plugin, count in [("tls", 1), ("tls ssl/qpsmtpd-server.crt ssl/qpsmtpd-server.key ssl/qpsmtpd-ca.crt", 2)]:
        server = tls_server(plugin=plugin)
        result = subprocess.run(["openssl", "s_client", "-connect", "%s:%d" % server.address, "-starttls", "smtp",
                                 "-showcerts", "-CAfile", server.ca], input="QUIT\n", capture_output=True, text=True,
                                timeout=20)
        assert "Verify return code: 0 (ok)" in result.stdout, result.stdout
        assert result.stdout.count("-----BEGIN CERTIFICATE-----") == count
        server.stop()


def test_swaks_starttls_delivers(tls_server, tmp_path):
    """swaks --tls, verifying the certificate against the test CA, delivers over STARTTLS."""
    server = tls_server()
    result = subprocess.run(["swaks", "--server", "%s:%d" % server.address, "--from", "a@sender.test",
                             "--to", "u@example.com", "--tls", "--tls-verify", "--tls-ca-path", server.ca,
                             "--timeout", "10"], capture_output=True, text=True, timeout=30)
    out = result.stdout
    assert " -> STARTTLS\n<-  220 2.0.0 " in out and "=== TLS started with cipher TLSv1.3:" in out, out
    assert " ~> EHLO " in out and "<~  250-STARTTLS" not in out and "<~  250 STARTTLS" not in out
    assert "<~  250 2.0.0 Queued" in out
    [message] = delivered(tmp_path)
    assert "with ESMTPS (TLSv1.3 " in message


# -- STARTTLS injection (CVE-2011-0411 class) --------------------------------------------


def test_commands_pipelined_with_starttls_are_discarded(tls_server):
    """RSET and MAIL sent in the STARTTLS packet are never answered: the first TLS reply is the EHLO's."""
    server = tls_server()
    client = greeted_and_starting_tls(server, b"STARTTLS\r\nRSET\r\nMAIL FROM:<evil@attacker.test>\r\n")
    client.start_tls(trusting(server))
    code, lines = client.command("EHLO client.test")
    assert code == 250 and len(lines) > 1 and lines[0].startswith("mx.test Hi ")
    assert client.command("NOOP")[0] == 250  # no injected reply is still waiting in between
    assert client.command("RCPT TO:<u@example.com>")[0] == 503  # and no MAIL was taken
    client.close()


def test_plaintext_after_the_220_is_not_a_command(tls_server):
    """Plaintext sent after the 220 (then a ClientHello) fails the handshake; it is never answered as SMTP."""
    server = tls_server()
    client = greeted_and_starting_tls(server)
    client.send(b"RSET\r\n" + client_hello(trusting(server)))
    answer = client.read_to_eof()
    assert answer == b"" or answer[:1] == b"\x15", answer  # nothing, or a TLS alert record: no SMTP reply
    client.close()
    assert wait_for(lambda: "fail, TLS handshake with 127.0.0.1" in server.log)
    # Labelled as what it is, not as the hook STARTTLS arrives through (it was "(unrecognized_command)").
    [line] = [line for line in server.log.splitlines() if "fail, TLS handshake" in line]
    assert "(starttls) tls: fail, TLS handshake with 127.0.0.1" in line, line


def test_starttls_in_inetd_mode(tmp_path):
    """bin/qpsmtpd on an inetd socket (fds 0 and 1) does STARTTLS too, dropping pipelined plaintext, and delivers."""
    values = {"me": "mx.test", "rcpthosts": ["example.com"], "spool_dir": str(tmp_path / "spool"),
              **write_config(tmp_path)}
    testing.write_config(tmp_path / "config", values)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = RawClient(listener.getsockname())
        accepted, _ = listener.accept()
    with accepted:
        process = subprocess.Popen([sys.executable, str(ROOT / "bin" / "qpsmtpd"), "--config-dir",
                                    str(tmp_path / "config")], stdin=accepted, stdout=accepted, cwd=tmp_path)
    try:
        assert client.reply()[0] == 220
        assert "STARTTLS" in client.command("EHLO client.test")[1]
        client.send(b"STARTTLS\r\nRSET\r\n")
        assert client.reply()[0] == 220
        client.start_tls(ssl.create_default_context(cafile=str(tmp_path / "config" / "ssl" / "qpsmtpd-ca.crt")))
        code, lines = client.command("EHLO client.test")
        assert code == 250 and lines[0].startswith("mx.test Hi ") and "STARTTLS" not in lines
        assert client.command("MAIL FROM:<a@sender.test>")[0] == 250
        assert client.command("RCPT TO:<u@example.com>")[0] == 250
        assert client.command("DATA")[0] == 354
        assert client.command("Subject: inetd\r\n\r\nhi\r\n.")[0] == 250
        assert client.command("QUIT")[0] == 221
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        client.close()
    [message] = delivered(tmp_path)
    assert " with ESMTPS (TLSv1.3 " in message


# -- handshake deadline ------------------------------------------------------------------


def test_client_that_never_starts_the_handshake_is_dropped(tls_server, tmp_path):
    """A client silent after the 220 is dropped after handshake_timeout; another session is served meanwhile."""
    server = tls_server(tls_ini=["handshake_timeout = 2"])
    hanging = greeted_and_starting_tls(server)
    started = time.monotonic()
    with smtplib.SMTP(*server.address, timeout=10) as other:
        other.starttls(context=trusting(server))
        assert other.sendmail("a@sender.test", ["u@example.com"], "Subject: meanwhile\r\n\r\nhi\r\n") == {}
    assert time.monotonic() - started < 2, "the other session was not served while the first one hung"
    assert len(delivered(tmp_path)) == 1
    assert hanging.read_to_eof() == b""
    assert 1.5 <= time.monotonic() - started < 6
    hanging.close()


def test_client_that_trickles_the_handshake_is_cut_at_the_deadline(tls_server):
    """handshake_timeout bounds the whole handshake: a ClientHello sent a byte every 0.2 s is cut off."""
    server = tls_server(tls_ini=["handshake_timeout = 1"])
    client = greeted_and_starting_tls(server)
    hello = client_hello(trusting(server))
    started = time.monotonic()
    dropped = False
    for byte in hello[:25]:  # 25 bytes take 5 s: far longer than the deadline
        try:
            client.sock.send(bytes([byte]))
        except OSError:
            dropped = True
            break
        readable, _, _ = select.select([client.sock], [], [], 0.2)
        if readable:
            try:
                dropped = client.sock.recv(100) == b""
            except ConnectionResetError:
                dropped = True
            break
    elapsed = time.monotonic() - started
    assert dropped and 0.8 <= elapsed < 3, elapsed
    client.close()


# -- implicit TLS (RFC 8314) -----------------------------------------------------------------


def test_smtps_listener_greets_only_after_the_handshake(tls_server, tmp_path):
    """--smtps-listen speaks TLS first: SMTP_SSL gets the greeting, no STARTTLS offer, 503 for STARTTLS, delivery."""
    port = free_port()
    server = tls_server(args=["--smtps-listen", "127.0.0.1:%d" % port])
    with smtplib.SMTP_SSL("127.0.0.1", port, timeout=10, context=trusting(server)) as client:
        assert client.ehlo("client.test")[0] == 250
        assert not client.has_extn("starttls")
        assert client.docmd("STARTTLS")[0] == 503
        cipher = client.sock.cipher()[0]
        assert client.sendmail("a@sender.test", ["u@example.com"], "Subject: smtps\r\n\r\nhi\r\n") == {}
    [message] = delivered(tmp_path)
    assert "with ESMTPS (TLSv1.3 %s encrypted);" % cipher in message
    with smtplib.SMTP(*server.address, timeout=10) as plain:  # the ordinary listener still offers STARTTLS
        plain.ehlo("client.test")
        assert plain.has_extn("starttls")


def test_smtps_commands_pipelined_in_the_first_read_are_all_answered(tls_server):
    """Implicit TLS: EHLO and NOOP sent in one write right after the handshake both get their reply
    (the handshake made before the greeting drops nothing the client sends after it)."""
    port = free_port()
    server = tls_server(args=["--smtps-listen", "127.0.0.1:%d" % port])
    client = RawClient(("127.0.0.1", port))
    try:
        client.sock = trusting(server).wrap_socket(client.sock, server_hostname="127.0.0.1")
        assert client.reply().code == 220
        client.send(b"EHLO x\r\nNOOP\r\n")
        assert [client.reply().code, client.reply().code] == [250, 250]
        assert client.command("QUIT").code == 221
    finally:
        client.close()


def test_plaintext_client_on_smtps_port_gets_no_greeting(tls_server):
    """A plaintext client on the smtps port is never greeted: a silent one is dropped at the deadline,
    one that speaks first is dropped at once; neither sees an SMTP reply."""
    port = free_port()
    server = tls_server(tls_ini=["handshake_timeout = 1"], args=["--smtps-listen", "127.0.0.1:%d" % port])
    silent = RawClient(("127.0.0.1", port))
    talker = RawClient(("127.0.0.1", port))
    talker.send(b"EHLO client.test\r\n")
    answer = talker.read_to_eof()
    assert answer == b"" or answer[:1] == b"\x15", answer
    assert silent.read_to_eof() == b""
    silent.close()
    talker.close()
    assert wait_for(lambda: server.log.count("fail, TLS handshake with 127.0.0.1") == 2)


def test_swaks_implicit_tls(tls_server, tmp_path):
    """swaks --tlsc (TLS on connect) delivers through the smtps listener."""
    port = free_port()
    server = tls_server(args=["--smtps-listen", "127.0.0.1:%d" % port])
    result = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % port, "--from", "a@sender.test",
                             "--to", "u@example.com", "--tlsc", "--tls-verify", "--tls-ca-path", server.ca,
                             "--timeout", "10"], capture_output=True, text=True, timeout=30)
    assert "<~  220 " in result.stdout and "<~  250 2.0.0" in result.stdout, result.stdout
    assert len(delivered(tmp_path)) == 1


def test_smtps_listen_without_tls_plugin_stops_start_up(tmp_path):
    """--smtps-listen with no tls plugin loaded refuses to start (exit 78) and says how to fix it."""
    status, stderr = start_up_error(tmp_path, ["--smtps-listen", "127.0.0.1:%d" % free_port()], plugins=())
    assert status == 78
    assert "--smtps-listen needs the tls plugin; add 'tls CERT KEY' to " in stderr


# -- protocol versions and configuration ---------------------------------------------------


def tls11_client():
    """A client context that only speaks TLS 1.1 (OpenSSL 3 wants security level 0 for it)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # deprecated is the point
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_1
    return context


def local_tls11_works(certfile, keyfile):
    """Whether this OpenSSL can do a TLS 1.1 handshake at all, against a permissive local server."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        server_context.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            server_context.minimum_version = ssl.TLSVersion.TLSv1_1
        server_context.load_cert_chain(certfile, keyfile)
        client_context = tls11_client()
    except (ValueError, ssl.SSLError):
        return False
    left, right = socket.socketpair()
    left.settimeout(5)
    right.settimeout(5)
    results = []

    def serve():
        try:
            server_context.wrap_socket(left, server_side=True).close()
        except (OSError, ssl.SSLError):
            pass
    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_context.wrap_socket(right) as tls:
            results.append(tls.version())
    except (OSError, ssl.SSLError):
        pass
    thread.join(10)
    left.close()
    right.close()
    return results == ["TLSv1.1"]


def test_default_is_tls12_or_newer(tls_server, tmp_path):
    """By default a TLS 1.2-only client is served, and a TLS 1.1-only client fails the handshake."""
    server = tls_server()
    tls12 = trusting(server)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with smtplib.SMTP(*server.address, timeout=10) as client:
        client.starttls(context=tls12)
        assert client.sock.version() == "TLSv1.2"
    ssl_dir = tmp_path / "config" / "ssl"
    if not local_tls11_works(ssl_dir / "qpsmtpd-server.crt", ssl_dir / "qpsmtpd-server.key"):
        pytest.skip("this OpenSSL cannot speak TLS 1.1 even to a permissive server; nothing to refuse")
    client = greeted_and_starting_tls(server)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        client.start_tls(tls11_client())
    client.close()
    assert wait_for(lambda: "fail, TLS handshake with 127.0.0.1" in server.log)


def test_min_version_tls13_refuses_tls12(tls_server):
    """min_version = TLSv1_3 in tls.ini: a TLS 1.2-only client fails, a current client gets TLS 1.3."""
    server = tls_server(tls_ini=["min_version = TLSv1_3"])
    tls12 = trusting(server)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with smtplib.SMTP(*server.address, timeout=10) as client:
        client.ehlo("client.test")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            client.starttls(context=tls12)
    with smtplib.SMTP(*server.address, timeout=10) as client:
        client.starttls(context=trusting(server))
        assert client.sock.version() == "TLSv1.3"


@pytest.mark.parametrize("tls_ini, plugin, expected", [
    (["ciphers = NO-SUCH-CIPHER"], "tls", ["tls.ini: ciphers = 'NO-SUCH-CIPHER' selects no cipher",
                                           "fix the OpenSSL cipher string"]),
    ([], "tls ssl/missing.crt ssl/qpsmtpd-server.key", ["ssl/missing.crt does not exist",
                                                         "bin/qpsmtpd-tls-cert or fix the path"]),
    ([], "tls ssl/qpsmtpd-server.crt ssl/qpsmtpd-ca.key", ["cannot load certificate",
                                                            "the key belongs to the certificate"]),
    (["handshake_timeout = 60"], "tls", ["handshake_timeout = 60 is not below plugin_timeout (30 s)"]),
])
def test_bad_tls_config_stops_start_up(tmp_path, tls_ini, plugin, expected):
    """A bad cipher string, a missing certificate, a key that does not match it, or a handshake
    deadline the plugin timeout would cut short stops start-up (exit 78) naming the file and the fix."""
    status, stderr = start_up_error(tmp_path, tls_ini=tls_ini, plugins=[plugin])
    assert status == 78
    assert "config/plugins:1" in stderr or "config/plugins line 1" in stderr, stderr
    for text in expected:
        assert text in stderr


# -- certificate reload ----------------------------------------------------------------------


def peer_certificate(server):
    """The certificate the server presents now (DER), fetched over STARTTLS without verifying it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP(*server.address, timeout=10) as client:
        client.starttls(context=context)
        return client.sock.getpeercert(binary_form=True)


def test_sighup_reloads_the_certificate(tls_server, tmp_path):
    """After the certificate files are replaced and SIGHUP sent, new connections get the new certificate."""
    server = tls_server()
    ssl_dir = tmp_path / "config" / "ssl"
    first = peer_certificate(server)
    assert first == ssl.PEM_cert_to_DER_cert((ssl_dir / "qpsmtpd-server.crt").read_text())
    make_certs(tmp_path / "config", "--force")
    second = ssl.PEM_cert_to_DER_cert((ssl_dir / "qpsmtpd-server.crt").read_text())
    assert second != first
    assert peer_certificate(server) == first  # nothing changes before the signal
    server.process.send_signal(signal.SIGHUP)
    assert wait_for(lambda: peer_certificate(server) == second)


SHOWPEER = '''
from qpgevent import DECLINED, DONE


def hook_unrecognized_command(self, transaction, verb, rest):
    if verb != "xpeer":
        return DECLINED
    peer = self.qp.connection.notes.get("tls_peer_certificate")
    subject = dict(item[0] for item in peer["subject"]) if peer else {}
    self.qp.respond(250, "peer=%s" % subject.get("commonName"))
    return DONE
'''


def make_client_cert(ssl_dir, tmp_path):
    """A client certificate (CN client.test) signed by the test CA."""
    key, csr, crt = tmp_path / "client.key", tmp_path / "client.csr", tmp_path / "client.crt"
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-subj", "/CN=client.test", "-out", str(csr)], check=True,
                   capture_output=True, timeout=30)
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ssl_dir / "qpsmtpd-ca.crt"),
                    "-CAkey", str(ssl_dir / "qpsmtpd-ca.key"), "-CAcreateserial", "-days", "1", "-out", str(crt)],
                   check=True, capture_output=True, timeout=30)
    return crt, key


def test_optional_client_certificate_reaches_the_notes(live_server, tmp_path):
    """With client_certificates = optional, a client certificate signed by the CA is in
    connection.notes["tls_peer_certificate"]; a client without one still gets in."""
    config = write_config(tmp_path, ["client_certificates = optional", "client_ca = ssl/qpsmtpd-ca.crt"])
    (tmp_path / "testplugins" / "showpeer.py").write_text(SHOWPEER)
    server = live_server(plugins=["showpeer", *config.pop("plugins")], config=config)
    ca = str(tmp_path / "config" / "ssl" / "qpsmtpd-ca.crt")
    crt, key = make_client_cert(tmp_path / "config" / "ssl", tmp_path)
    with_cert = ssl.create_default_context(cafile=ca)
    with_cert.load_cert_chain(str(crt), str(key))
    for context, expected in ((with_cert, "peer=client.test"), (ssl.create_default_context(cafile=ca), "peer=None")):
        with smtplib.SMTP(*server.address, timeout=10) as client:
            client.starttls(context=context)
            client.ehlo("client.test")
            assert client.docmd("XPEER") == (250, ("2.0.0 " + expected).encode())


def test_optional_client_certificates_need_a_ca(tmp_path):
    """client_certificates = optional without any CA to check them against stops start-up."""
    status, stderr = start_up_error(tmp_path, tls_ini=["client_certificates = optional"])
    assert status == 78 and "needs client_ca" in stderr


def test_session_after_handshake_is_not_bound_by_the_handshake_deadline(tls_server):
    """The handshake's short deadline ends with the handshake: a TLS client may then think for longer."""
    server = tls_server(tls_ini=["handshake_timeout = 1"])
    with smtplib.SMTP(*server.address, timeout=10) as client:
        client.starttls(context=trusting(server))
        client.ehlo("client.test")
        time.sleep(2.5)  # longer than handshake_timeout, far below the idle timeout
        assert client.noop()[0] == 250
