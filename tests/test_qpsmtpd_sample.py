"""Acceptance: qpsmtpd's own config.sample/ (vendored, unchanged) serves mail with its whole filter chain.

The copy gets what any site adds to qpsmtpd's sample before going live: a
queue plugin (the sample enables none), the DNS servers to ask (here the
test DNS server, answering for the sample's own blocklist zones), a spool
directory.  No spamd runs for this test: the sample's `spamassassin reject 12`
finds nothing at 127.0.0.1:783 and, failing open, lets the mail through
(tests/plugins/test_spamassassin.py runs it against a real spamd).
"""
import base64
import email
import shutil
import smtplib
import subprocess
import sys
import time
from email.utils import formatdate, make_msgid
from pathlib import Path

import authres
import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from qpgevent.testing import ROOT, LiveServer, wait_for

SAMPLE = Path(__file__).parent / "fixtures" / "qpsmtpd-config.sample"
CLEAN_IP, LISTED_IP = "127.0.0.5", "127.0.0.2"
DOMAIN = "sample-sender.test"


@pytest.fixture(scope="module")
def key():
    private = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = private.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, base64.b64encode(public).decode()


@pytest.fixture(scope="module")
def sample(tmp_path_factory, dns_server, key):
    """A LiveServer on a copy of config.sample; yields (server, maildir)."""
    base = tmp_path_factory.mktemp("sample")
    config = base / "config"
    shutil.copytree(SAMPLE, config)
    maildir = base / "Maildir"
    with open(config / "plugins", "a") as plugins:
        plugins.write("queue/maildir %s\n" % maildir)
    (config / "dns_servers").write_text("127.0.0.1:%d\n" % dns_server.port)
    (config / "spool_dir").write_text(str(base / "spool") + "\n")
    # The sample's own blocklists, answered by the test DNS server; 127.0.0.2 is listed, as on the real lists.
    dns_server.add_zone("zen.spamhaus.org.", ["2.0.0.127 IN A 127.0.0.2",
                                              '2.0.0.127 IN TXT "127.0.0.2 is listed for the test"'])
    dns_server.add_zone("spamsources.fabel.dk.", [])
    dns_server.add_zone("dsn.rfc-ignorant.org.", [])
    for ip in (CLEAN_IP, LISTED_IP):
        reverse = ".".join(reversed(ip.split("."))) + ".in-addr.arpa."
        dns_server.add_zone(reverse, ["@ IN PTR host%s.%s." % (ip.split(".")[-1], DOMAIN)])
    dns_server.add_zone(DOMAIN + ".", [
        "host5 IN A %s" % CLEAN_IP, "host2 IN A %s" % LISTED_IP, "@ IN MX 10 host5.%s." % DOMAIN,
        '@ IN TXT "v=spf1 ip4:%s ip4:%s -all"' % (CLEAN_IP, LISTED_IP),
        'sel._domainkey IN TXT "v=DKIM1; k=rsa; p=%s"' % key[1],
        '_dmarc IN TXT "v=DMARC1; p=reject"'])
    check = subprocess.run([sys.executable, str(ROOT / "bin" / "qpsmtpd-server"), "--config-dir", str(config),
                            "--check-config"], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    with LiveServer(config) as server:
        yield server, maildir


def signed_message(key: tuple, subject: str) -> bytes:
    message = ("From: Alice <alice@%s>\r\nTo: bob@localhost\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: %s\r\n\r\n"
               "A clean message from an SPF-pass, DKIM-signed domain.\r\n"
               % (DOMAIN, subject, formatdate(localtime=True), make_msgid(domain=DOMAIN))).encode()
    signature = dkim.sign(message, b"sel", DOMAIN.encode(), key[0],
                          include_headers=[b"From", b"To", b"Subject", b"Date", b"Message-ID"])
    return signature + message


def client(server, ip: str) -> smtplib.SMTP:
    return smtplib.SMTP(*server.address, local_hostname="host%s.%s" % (ip.split(".")[-1], DOMAIN),
                        source_address=(ip, 0), timeout=30)


def test_a_clean_signed_message_is_queued_with_our_authentication_results(sample, key):
    server, maildir = sample
    with client(server, CLEAN_IP) as smtp:
        smtp.ehlo()
        smtp.sendmail("alice@%s" % DOMAIN, ["bob@localhost"], signed_message(key, "clean"))
    assert wait_for(lambda: list((maildir / "new").glob("*")))
    [stored] = list((maildir / "new").glob("*"))
    message = email.message_from_bytes(stored.read_bytes())
    results = message["Authentication-Results"]
    # No iprev: fcrdns, as qpsmtpd's, does not look loopback clients up (test_fcrdns.py covers iprev via PROXY).
    for method in ("spf=pass smtp.mailfrom=%s" % DOMAIN, "dkim=pass header.d=%s header.s=sel" % DOMAIN,
                   "dmarc=pass (p=reject) header.from=%s" % DOMAIN):
        assert method in results, results
    assert message["Received-SPF"].startswith("pass")
    # An independent RFC 8601 parser reads the one field the core wrote from every plugin's result.
    parsed = authres.AuthenticationResultsHeader.parse("Authentication-Results: " + results)
    assert {(r.method, r.result) for r in parsed.results} == {("spf", "pass"), ("dkim", "pass"), ("dmarc", "pass")}
    assert len(message.get_all("Authentication-Results")) == 1


def test_a_listed_client_is_refused_as_the_sample_says(sample, key):
    """`dnsbl reject naughty reject_type disconnect` + `naughty reject data`: refused at DATA, then disconnected."""
    server, maildir = sample
    before = len(list((maildir / "new").glob("*"))) if (maildir / "new").exists() else 0
    started = time.monotonic()
    with pytest.raises((smtplib.SMTPDataError, smtplib.SMTPServerDisconnected)) as caught:
        with client(server, LISTED_IP) as smtp:
            smtp.ehlo()
            smtp.sendmail("alice@%s" % DOMAIN, ["bob@localhost"], signed_message(key, "listed"))
    if isinstance(caught.value, smtplib.SMTPDataError):
        assert caught.value.smtp_code // 100 == 5
        assert b"127.0.0.2 is listed for the test" in caught.value.smtp_error
    assert time.monotonic() - started < 20
    assert len(list((maildir / "new").glob("*"))) == before
    assert "listed for the test" in server.log
