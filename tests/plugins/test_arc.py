"""arc: chains verified through the test DNS server (A-R arc=, note arc_result), our seal verified by dkimpy alone."""
import os
import re
import smtplib

import dkim
import pytest

from qpgevent.dkimkeys import generate
from qpgevent.errors import ConfigError
from qpgevent.testing import TestSession, make_smtpd

ORIGIN = "arc-test.example."
AUTHOR = "author.arc-test.example"  # signs the original message (DKIM)
FORWARDER = "fwd.arc-test.example"  # the hop before us: seals with ARC
OURS = "ours.arc-test.example"  # our sealing domain
RCPT = "user@example.com"


def published(directory):
    [line] = [text.strip() for text in (directory / "dns").read_text().splitlines() if " IN TXT " in text
              and "._domainkey." in text]
    return line.replace(" IN TXT ", " 300 IN TXT ")


@pytest.fixture(scope="module")
def keys(tmp_path_factory, dns_server):
    base = tmp_path_factory.mktemp("arc-keys")
    directories = {"author": generate(base, AUTHOR, "a1", bits=1024), "fwd": generate(base, FORWARDER, "f1", bits=1024),
                   "ours": generate(base, OURS, "s1", bits=1024)}
    zone = [published(directory) for directory in directories.values()]
    dns_server.add_zone(ORIGIN, zone)
    dns_server.servfail.add("broken._domainkey.%s" % FORWARDER)
    return dict({name: (directory / "private").read_bytes() for name, directory in directories.items()},
                ours_dir=directories["ours"], zone=zone)


def zone_dnsfunc(zone):
    """What an independent verifier sees: TXT answers from the zone lines, nothing else."""
    def lookup(name, timeout=5):
        for line in zone:
            if line.split()[0].rstrip(".") == name.decode().rstrip("."):
                return "".join(re.findall(r'"([^"]*)"', line)).encode()
        return None
    return lookup


def original(keys):
    text = ("From: Ann <ann@%s>\nTo: <list@%s>\nSubject: meeting\nDate: Thu, 03 Dec 2026 10:00:00 +0000\n"
            "Message-ID: <m1@%s>\n\nSee you at ten.\n" % (AUTHOR, FORWARDER, AUTHOR)).encode()
    return dkim.sign(text, b"a1", AUTHOR.encode(), keys["author"], linesep=b"\n") + text


def forwarded(keys, selector=b"f1"):
    """The original, as a forwarder passes it on: its A-R, then its ARC set (i=1, cv=none) on top."""
    text = b"Authentication-Results: %s; dkim=pass header.d=%s; arc=none\n" % (FORWARDER.encode(), AUTHOR.encode())
    text += original(keys)
    arc_set = dkim.arc_sign(text, selector, FORWARDER.encode(), keys["fwd"], FORWARDER.encode(), linesep=b"\n")
    assert len(arc_set) == 3
    return b"".join(arc_set) + text


def config(dns_server, **extra):
    return dict({"rcpthosts": ["example.com"], "dns_servers": "127.0.0.1:%d" % dns_server.port,
                 "dns_timeout": "1"}, **extra)


def with_key(tmp_path, keys):
    """config/dkim/<OURS> -> our key, as bin/qpsmtpd-dkim-keygen leaves it."""
    (tmp_path / "config" / "dkim").mkdir(parents=True, exist_ok=True)
    os.symlink(keys["ours_dir"], tmp_path / "config" / "dkim" / OURS)


def deliver(tmp_path, dns_server, data, plugins=("arc",), ip="192.0.2.40", relay=False, **extra):
    """(replies, stored message or None, arc_result note) for ``data`` through ``plugins``, rcpt_ok and a Maildir."""
    maildir = tmp_path / "Maildir"
    if relay:
        extra["relayclients"] = ip
    smtpd = make_smtpd(tmp_path, plugins=["relay"] * relay + list(plugins) + ["rcpt_ok", "queue/maildir %s" % maildir],
                       config=config(dns_server, **extra))
    session = TestSession(smtpd, remote_ip=ip)
    notes = {}
    session.mock_hook("queue_pre", lambda plugin, transaction: notes.update(transaction.notes))
    replies = session.send_message("list@%s" % FORWARDER, [RCPT], data)
    stored = list((maildir / "new").iterdir()) if (maildir / "new").is_dir() else []
    return replies, (stored[0].read_bytes() if stored else None), notes.get("arc_result")


def field(stored, name):
    match = re.search(rb"^%s: (.*(?:\n[ \t].*)*)" % name.encode(), stored.split(b"\n\n")[0], re.M)
    return re.sub(r"\s+", " ", match.group(1).decode()) if match else ""


def test_forwarded_chain_passes(tmp_path, dns_server, keys):
    """A chain sealed by the forwarder verifies: arc=pass in our Authentication-Results and in the note."""
    replies, stored, result = deliver(tmp_path, dns_server, forwarded(keys))
    assert replies[-1].code == 250
    assert result == "pass"
    assert field(stored, "Authentication-Results") == "mx.test; arc=pass"


def test_changed_after_sealing_fails(tmp_path, dns_server, keys):
    """A body changed after the forwarder sealed it breaks the chain: arc=fail, and the mail is still accepted."""
    replies, stored, result = deliver(tmp_path, dns_server, forwarded(keys).replace(b"at ten", b"at 11"))
    assert replies[-1].code == 250
    assert result == "fail"
    assert "arc=fail" in field(stored, "Authentication-Results")


def test_forged_seal_fails(tmp_path, dns_server, keys):
    """An ARC set claiming another domain (d=, s= rewritten to the author's key) fails."""
    data = forwarded(keys).replace(b"d=%s" % FORWARDER.encode(), b"d=%s" % AUTHOR.encode()).replace(b"s=f1", b"s=a1")
    assert deliver(tmp_path, dns_server, data)[2] == "fail"


def test_unsealed_mail_is_arc_none(tmp_path, dns_server, keys):
    replies, stored, result = deliver(tmp_path, dns_server, original(keys))
    assert (replies[-1].code, result) == (250, "none")
    assert field(stored, "Authentication-Results") == "mx.test; arc=none"


def test_key_lookup_failure_is_temperror_and_not_sealed(tmp_path, dns_server, keys):
    """A seal whose key lookup gets SERVFAIL: arc=temperror, accepted, and we do not seal what we could not check."""
    with_key(tmp_path, keys)
    replies, stored, result = deliver(tmp_path, dns_server, forwarded(keys, selector=b"broken"),
                                      plugins=["arc seal all domain %s" % OURS])
    assert (replies[-1].code, result) == (250, "temperror")
    assert field(stored, "ARC-Seal").count("i=1") == 1 and "i=2" not in stored.decode()


def test_our_seal_verifies_independently_over_a_real_socket(live_server, tmp_path, dns_server, keys):
    """seal all: we add i=2 (cv=pass) whose AAR is our A-R (dkim and arc results); dkimpy verifies the chain."""
    with_key(tmp_path, keys)
    server = live_server(plugins=["dkim", "arc seal all domain %s" % OURS, "rcpt_ok",
                                  "queue/maildir %s" % (tmp_path / "Maildir")], config=config(dns_server))
    with smtplib.SMTP(*server.address, timeout=10) as client:
        client.sendmail("list@%s" % FORWARDER, [RCPT], forwarded(keys).replace(b"\n", b"\r\n"))
    [path] = (tmp_path / "Maildir" / "new").iterdir()
    stored = path.read_bytes()
    validation, sets, reason = dkim.arc_verify(stored, dnsfunc=zone_dnsfunc(keys["zone"]))
    assert (validation, len(sets)) == (dkim.CV_Pass, 2), reason
    seal = field(stored, "ARC-Seal")
    assert "i=2" in seal and "cv=pass" in seal and "d=%s" % OURS in seal and "s=s1" in seal
    aar = field(stored, "ARC-Authentication-Results")
    assert aar.startswith("i=2; mx.test;")
    ours = field(stored, "Authentication-Results")
    assert "dkim=pass header.d=%s header.s=a1" % AUTHOR in ours and "arc=pass" in ours
    assert "dkim=pass header.d=%s header.s=a1" % AUTHOR in aar and "arc=pass" in aar
    changed = stored.replace(b"See you at ten.", b"See you at 11.")
    assert dkim.arc_verify(changed, dnsfunc=zone_dnsfunc(keys["zone"]))[0] == dkim.CV_Fail


def test_seal_relay_seals_relay_clients_only(tmp_path, dns_server, keys):
    """seal relay: a relay client's message gets i=1 (cv=none), which verifies; others are only checked."""
    with_key(tmp_path, keys)
    line = "arc seal relay domain %s" % OURS
    _, stored, _ = deliver(tmp_path, dns_server, original(keys), plugins=[line], ip="127.0.0.1", relay=True)
    assert "i=1" in field(stored, "ARC-Seal") and "cv=none" in field(stored, "ARC-Seal")
    assert dkim.arc_verify(stored, dnsfunc=zone_dnsfunc(keys["zone"]))[0] == dkim.CV_Pass
    other = tmp_path / "other"
    other.mkdir()
    with_key(other, keys)
    _, stored, _ = deliver(other, dns_server, original(keys), plugins=[line])
    assert b"ARC-Seal" not in stored


def test_key_argument_and_me_auth_results_none(tmp_path, dns_server, keys):
    """key/selector/domain name a key file; with A-R turned off the seal still carries our results."""
    line = "arc seal all key %s selector s1 domain %s" % (keys["ours_dir"] / "private", OURS)
    _, stored, _ = deliver(tmp_path, dns_server, forwarded(keys), plugins=[line], **{"me-auth-results": "none"})
    assert "Authentication-Results: mx.test" not in stored.decode()
    assert field(stored, "ARC-Authentication-Results") == "i=2; mx.test; arc=pass"
    assert dkim.arc_verify(stored, dnsfunc=zone_dnsfunc(keys["zone"]))[0] == dkim.CV_Pass


@pytest.mark.parametrize("line, complaint", [
    ("arc seal all domain nokey.test", "bin/qpsmtpd-dkim-keygen nokey.test"),
    ("arc seal relay key /nonexistent/private", "needs selector and domain"),
    ("arc seal relay key /nonexistent/private selector s domain d.test", "cannot read key /nonexistent/private"),
    ("arc seal sometimes", "seal takes one of none, relay, all"),
])
def test_start_up_refuses_a_seal_without_a_key(tmp_path, line, complaint):
    with pytest.raises(ConfigError, match=re.escape(complaint)):
        make_smtpd(tmp_path, plugins=[line])
