"""A real Postfix in front of us: its smtpd proxies through qpgevent (``smtpd_proxy_filter``).

The loop docs/operations.md describes ("Behind Postfix as a before-queue
filter"): client (127.0.0.5) -> Postfix's front smtpd -> qpgevent, told who
the client is -> ``queue/smtp-forward`` (XCLIENT on) -> Postfix's own smtpd
(the after-filter port) -> its queue -> the Maildir.  Our plugins must see
127.0.0.5 and the client's HELO, not Postfix.  Postfix's proxy client names
the client with XFORWARD (it sends no XCLIENT, whatever we offer: see
qpgevent/xclient.py); the XCLIENT we take is what our smtp-forward and other
proxies send, tested in-process in tests/test_xclient.py and over a socket below.
"""
import json
import shutil
import smtplib
import tempfile
from pathlib import Path

import pytest

from daemons.postfix_private import PostfixInstance
from qpgevent.testing import LiveServer, wait_for, write_config

DOMAIN = "xclient-test.example"
CLIENT_IP = "127.0.0.5"

pytestmark = pytest.mark.skipif(shutil.which("postfix") is None,
                                reason="postfix is not installed (tests/run installs it)")

# Writes what the hooks saw, one JSON line per hook, to the file named in the plugin's source.
RECORDER = '''
import json
from qpgevent.constants import DECLINED

def _record(self, **fields):
    c = self.qp.connection
    fields.update(ip=c.remote_ip, host=c.remote_host, relay=c.relay_client)
    with open(%r, "a") as out:
        out.write(json.dumps(fields) + "\\n")

def hook_connect(self, transaction):
    _record(self, hook="connect")
    return DECLINED

def hook_ehlo(self, transaction, host, *rest):
    _record(self, hook="ehlo", helo=host)
    return DECLINED

def hook_rcpt(self, transaction, recipient, **params):
    _record(self, hook="rcpt", helo=self.qp.connection.hello_host)
    return DECLINED
'''


@pytest.fixture(scope="module")
def loop():
    """Postfix (front port ``ports["front"]`` proxying to us, after-filter port ``smtpd_port``) and our server."""
    base = Path(tempfile.mkdtemp(prefix="qpg-xclient-"))  # not under pytest's 0700 tmp: postfix reads it
    base.chmod(0o755)
    # The front listener's options name our port, known once our server exists: filled in below.
    postfix = PostfixInstance(base, domain=DOMAIN, users=("alice",), smtpd_services={"front": []}, main_cf=[
        "mynetworks = 127.0.0.1/32", "smtpd_authorized_xclient_hosts = 127.0.0.1", "syslog_name = postfix-after",
        "default_transport = discard:no mail leaves this test", "relay_transport = discard:no mail leaves this test",
    ])
    record = base / "seen.jsonl"
    plugin_dir = base / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "recorder.py").write_text(RECORDER % str(record))
    config = write_config(base / "qpgevent", {
        "me": "filter.test", "spool_dir": str(base / "qspool"), "loglevel": "6", "plugin_dirs": str(plugin_dir),
        "xclient_hosts": ["127.0.0.1"], "rcpthosts": [DOMAIN], "smtp_forward.ini": ["starttls = no"],
        "plugins": ["recorder", "relay", "rcpt_ok", "queue/smtp-forward 127.0.0.1 %d xclient" % postfix.smtpd_port],
    })
    ours = LiveServer(config, cwd=base)
    # docs/operations.md's master.cf line for the front smtpd, as -o options.
    postfix.smtpd_services["front"] = ["syslog_name=postfix-front", "smtpd_proxy_filter=127.0.0.1:%d" % ours.port,
                                       "smtpd_proxy_options=speed_adjust", "smtpd_proxy_timeout=60s"]
    try:
        postfix.start()
        ours.start()
        yield postfix, ours, record
    finally:
        ours.stop()
        postfix.remove()


def seen(record):
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def test_postfix_proxies_through_us_and_our_plugins_judge_the_real_client(loop):
    postfix, ours, record = loop
    text = ("From: bob@{0}\nTo: alice@{0}\nSubject: via the filter\nDate: Thu, 03 Dec 2026 10:00:00 +0000\n"
            "Message-ID: <via-filter@{0}>\n\nHello through the filter.\n".format(DOMAIN))
    with smtplib.SMTP("127.0.0.1", postfix.ports["front"], timeout=60, source_address=(CLIENT_IP, 0)) as client:
        client.ehlo("real-client.test")
        client.sendmail("bob@" + DOMAIN, ["alice@" + DOMAIN], text.replace("\n", "\r\n").encode())
    assert wait_for(lambda: postfix.mailbox("alice"), seconds=30), postfix.log[-3000:]
    [stored] = [path.read_bytes() for path in postfix.mailbox("alice")]
    assert stored.endswith(text.encode())  # nothing lost or changed on the way, our trace headers above it
    events = seen(record)
    connects = [e["ip"] for e in events if e["hook"] == "connect"]
    # Postfix itself (127.0.0.1), then, after its XFORWARD, the client it named.
    assert connects[-2:] == ["127.0.0.1", CLIENT_IP], events
    assert "XFORWARD from 127.0.0.1: client is [127.0.0.5] [127.0.0.5]" in ours.log, ours.log
    [ehlo] = [e for e in events if e["hook"] == "ehlo" and e["ip"] == CLIENT_IP]
    assert ehlo["helo"] == "real-client.test"  # not Postfix's own EHLO name (smtpd_proxy_ehlo)
    rcpt = [e for e in events if e["hook"] == "rcpt"][-1]
    assert (rcpt["ip"], rcpt["helo"], rcpt["relay"]) == (CLIENT_IP, "real-client.test", False)
    # Our Received line names the client; Postfix's after-filter one too (we passed XCLIENT on).
    received = [line for line in stored.split(b"\n") if line.startswith(b"Received: ")]
    assert b"Received: from [127.0.0.5] (HELO real-client.test) (127.0.0.5)" in received, stored
    assert b"Received: from real-client.test (unknown [127.0.0.5])" in received, stored


def test_xclient_over_a_socket_from_xclient_hosts_only(loop):
    _, ours, record = loop
    with smtplib.SMTP(*ours.address, timeout=10, source_address=("127.0.0.2", 0)) as client:
        client.ehlo("other.test")
        assert not client.has_extn("xclient")
        code, text = client.docmd("XCLIENT", "ADDR=192.0.2.1 NAME=spoofed.test")
        assert (code, text[:5]) == (550, b"5.7.0")
    with smtplib.SMTP(*ours.address, timeout=10) as proxy:  # from 127.0.0.1, which is listed
        proxy.ehlo("postfix.test")
        assert proxy.esmtp_features["xclient"] == "NAME ADDR PORT PROTO HELO LOGIN"
        assert proxy.esmtp_features["xforward"] == "NAME ADDR PORT PROTO HELO"
        code, text = proxy.docmd("XCLIENT", "NAME=client.test ADDR=127.0.0.9 HELO=client.test")
        assert code == 220
        proxy.ehlo_resp = None
        proxy.ehlo("postfix.test")
        proxy.mail("bob@" + DOMAIN)
        assert proxy.rcpt("alice@" + DOMAIN)[0] == 250
    assert [e for e in seen(record) if e["hook"] == "rcpt"][-1]["ip"] == "127.0.0.9"
