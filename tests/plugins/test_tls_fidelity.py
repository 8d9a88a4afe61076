"""tls with qpsmtpd's files: tls_ciphers, tls_protocols, the dhparam argument, ./ssl; AEAD-only default; SANs."""
import ssl
import subprocess
import sys

import pytest

from qpgevent.errors import ConfigError
from qpgevent.testing import RawClient, make_smtpd
from test_tls import CERT_TOOL, make_certs, tls_server, trusting, write_config  # noqa: F401 (tls_server: fixture)


def tls12_client(server, cipher):
    """A verifying client that speaks only TLS 1.2 and offers only ``cipher``."""
    context = trusting(server)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(cipher)
    return context


def starttls(server, context, server_hostname="127.0.0.1"):
    """(version, cipher) negotiated over STARTTLS, or the exception the handshake raised."""
    client = RawClient(server.address)
    try:
        assert client.reply()[0] == 220 and client.command("EHLO client.test")[0] == 250
        assert client.command("STARTTLS")[0] == 220
        try:
            client.start_tls(context, server_hostname)
        except (ssl.SSLError, ConnectionError) as exc:
            return exc
        return client.sock.version(), client.sock.cipher()[0]
    finally:
        client.close()


def test_default_tls12_offers_no_cbc_suite(tls_server):
    """TLS 1.2 with a CBC suite (LUCKY13's target) fails the handshake; AES-GCM and ChaCha20 work; TLS 1.3 too."""
    server = tls_server()
    assert isinstance(starttls(server, tls12_client(server, "ECDHE-ECDSA-AES128-SHA256")), ssl.SSLError)
    assert isinstance(starttls(server, tls12_client(server, "ECDHE-ECDSA-AES256-SHA384")), ssl.SSLError)
    for cipher in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"):
        assert starttls(server, tls12_client(server, cipher)) == ("TLSv1.2", cipher)
    assert starttls(server, trusting(server))[0] == "TLSv1.3"


def qpsmtpd_tls_server(live_server, tmp_path, plugin="tls", **files):
    """A server with ``plugin`` and qpsmtpd's config files ``files`` (name -> content)."""
    config = write_config(tmp_path, plugins=[plugin])
    config.update(files)
    server = live_server(plugins=config.pop("plugins"), config=config)
    server.ca = str(tmp_path / "config" / "ssl" / "qpsmtpd-ca.crt")
    return server


def test_tls_ciphers_file_is_honoured(live_server, tmp_path):
    """config/tls_ciphers (an OpenSSL cipher string, as in qpsmtpd) replaces the default: here the admin
    allows one CBC suite only, so it works and AES-GCM does not."""
    server = qpsmtpd_tls_server(live_server, tmp_path, tls_ciphers=["# see plugins/tls", "ECDHE-ECDSA-AES256-SHA384"])
    assert starttls(server, tls12_client(server, "ECDHE-ECDSA-AES256-SHA384")) == ("TLSv1.2", "ECDHE-ECDSA-AES256-SHA384")
    assert isinstance(starttls(server, tls12_client(server, "ECDHE-ECDSA-AES128-GCM-SHA256")), ssl.SSLError)


def test_tls_protocols_file_turns_tls12_off(live_server, tmp_path):
    """config/tls_protocols in IO::Socket::SSL's syntax: '!TLSv1_2' leaves TLS 1.3 alone."""
    server = qpsmtpd_tls_server(live_server, tmp_path, tls_protocols="SSLv23:!SSLv2:!SSLv3:!TLSv1:!TLSv1_1:!TLSv1_2")
    assert isinstance(starttls(server, tls12_client(server, "ECDHE-ECDSA-AES128-GCM-SHA256")), ssl.SSLError)
    assert starttls(server, trusting(server))[0] == "TLSv1.3"


@pytest.mark.parametrize("protocols, problem", [
    ("SSLv3:TLSv1", r"tls_protocols:1: 'SSLv3:TLSv1' enables neither TLSv1_2 nor TLSv1_3"),
    ("SSLv23:!SSLv4", r"tls_protocols:1: unknown protocol '!SSLv4'"),
])
def test_tls_protocols_that_leave_nothing_stop_start_up(tmp_path, protocols, problem):
    make_certs(tmp_path / "config")
    with pytest.raises(ConfigError, match=problem):
        make_smtpd(tmp_path, plugins=["tls"], config={"tls_protocols": protocols})


def rsa_certificate(directory, name):
    """An RSA certificate and key (DHE suites need an RSA certificate) as ``name``.crt/.key in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(directory / (name + ".key")), "-out", str(directory / (name + ".crt"))],
                   check=True, capture_output=True, timeout=60)


def dh_parameters(path):
    """RFC 7919's ffdhe2048 group: generated at once, unlike 'openssl dhparam'."""
    subprocess.run(["openssl", "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "group:ffdhe2048",
                    "-out", str(path)], check=True, capture_output=True, timeout=60)


def dhe_client():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("DHE-RSA-AES128-GCM-SHA256")
    return context


def test_dhparam_argument_enables_dhe(live_server, tmp_path):
    """qpsmtpd's 4th argument, a DH parameter file, is loaded: DHE suites work with it and not without it."""
    ssl_dir = tmp_path / "config" / "ssl"
    make_certs(tmp_path / "config")
    rsa_certificate(ssl_dir, "rsa")
    dh_parameters(ssl_dir / "dh.pem")
    three = "tls ssl/rsa.crt ssl/rsa.key ssl/qpsmtpd-ca.crt"
    without = qpsmtpd_tls_server(live_server, tmp_path, plugin=three)
    assert isinstance(starttls(without, dhe_client()), ssl.SSLError)
    without.stop()
    with_dh = qpsmtpd_tls_server(live_server, tmp_path, plugin=three + " ssl/dh.pem")
    assert starttls(with_dh, dhe_client()) == ("TLSv1.2", "DHE-RSA-AES128-GCM-SHA256")


def test_bad_dhparam_file_stops_start_up(tmp_path):
    make_certs(tmp_path / "config")
    (tmp_path / "config" / "ssl" / "dh.pem").write_text("not parameters\n")
    with pytest.raises(ConfigError, match=r"cannot load DH parameters .*ssl/dh.pem.*openssl dhparam"):
        make_smtpd(tmp_path, plugins=["tls ssl/qpsmtpd-server.crt ssl/qpsmtpd-server.key ssl/qpsmtpd-ca.crt "
                                      "ssl/dh.pem"])


def test_qpsmtpd_ssl_directory_is_found(live_server, tmp_path):
    """'tls' without arguments and no ssl/ in the config directory finds qpsmtpd's layout: ssl/ beside config/
    (where plugins/tls_cert writes, in the directory qpsmtpd runs in) with qpsmtpd-dhparam.pem, which is loaded."""
    ssl_dir = tmp_path / "ssl"
    rsa_certificate(ssl_dir, "qpsmtpd-server")
    dh_parameters(ssl_dir / "qpsmtpd-dhparam.pem")
    server = live_server(plugins=["tls", "rcpt_ok"])
    assert starttls(server, dhe_client()) == ("TLSv1.2", "DHE-RSA-AES128-GCM-SHA256")


def test_no_certificate_anywhere_names_the_places(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"none of .*config/ssl, .*/ssl, .*/ssl has qpsmtpd-server.crt"):
        make_smtpd(tmp_path, plugins=["tls"])


def test_generated_certificate_verifies_for_loopback_and_me(live_server, tmp_path):
    """bin/qpsmtpd-tls-cert without --host (me = mx.test) makes a certificate a verifying client accepts
    for 127.0.0.1, ::1, localhost and mx.test alike."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "me").write_text("mx.test\n")
    subprocess.run([sys.executable, str(CERT_TOOL), "--config-dir", str(tmp_path / "config")], check=True,
                   capture_output=True, timeout=60)
    server = live_server(plugins=["tls", "rcpt_ok"])
    context = ssl.create_default_context(cafile=str(tmp_path / "config" / "ssl" / "qpsmtpd-ca.crt"))
    for name in ("127.0.0.1", "::1", "localhost", "mx.test"):
        assert starttls(server, context, server_hostname=name)[0] == "TLSv1.3", name
    assert isinstance(starttls(server, context, server_hostname="other.test"), ssl.SSLCertVerificationError)
