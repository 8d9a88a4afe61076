"""dkim: signatures verified through the test DNS server (A-R, notes, policy), relay mail signed, the keygen script."""
import os
import re
import smtplib
import subprocess
import sys
from pathlib import Path

import dkim
import pytest

from qpgevent.dkimkeys import generate, key_directory, load_key
from qpgevent.errors import ConfigError
from qpgevent.testing import TestSession, make_smtpd

ROOT = Path(__file__).resolve().parents[2]
ORIGIN = "dkim-test.example."
THEIRS = "sender.dkim-test.example"  # a test sender's domain: the test signs its mail
OURS = "ours.dkim-test.example"  # a domain the server signs for
RCPT = "user@example.com"


def published(directory: Path) -> str:
    """The TXT record line of a key made by dkimkeys.generate, read from the ``dns`` file it wrote."""
    [line] = [text.strip() for text in (directory / "dns").read_text().splitlines() if "._domainkey." in text
              and " IN TXT " in text]
    name, rest = line.split(" IN TXT ", 1)
    return "%s 300 IN TXT %s" % (name, rest)


def txt_of(zone_lines, name):
    """A dnsfunc answering from zone lines: what an independent verifier sees."""
    for line in zone_lines:
        if line.split()[0].rstrip(".").lower() == name.decode().rstrip(".").lower():
            return "".join(re.findall(r'"([^"]*)"', line)).encode()
    return None


@pytest.fixture(scope="module")
def keys(tmp_path_factory, dns_server):
    """Keys of a test sender (selector ``sel``) and of our domain (``relay1``), published in dkim-test.example."""
    base = tmp_path_factory.mktemp("dkim-keys")
    theirs = generate(base / "theirs", THEIRS, "sel", bits=1024)
    ours = generate(base / "ours", OURS, "relay1", bits=1024)
    zone = [published(theirs), published(ours),
            "bad._domainkey.%s. 300 IN TXT \"v=DKIM1; k=rsa; p=bm90IGEga2V5\"" % THEIRS,
            "slow._domainkey.%s. 300 IN TXT \"v=DKIM1; p=x\"" % THEIRS]
    dns_server.add_zone(ORIGIN, zone)
    dns_server.servfail.add("servfail._domainkey.%s" % THEIRS)
    dns_server.delay["slow._domainkey.%s" % THEIRS] = 2.0
    return {"theirs": (theirs / "private").read_bytes(), "ours_dir": ours, "zone": zone}


def config(dns_server, **extra):
    values = {"rcpthosts": ["example.com"], "dns_servers": "127.0.0.1:%d" % dns_server.port, "dns_timeout": "1"}
    values.update(extra)
    return values


def message(subject="hello", body="Hi there.\n", sender=THEIRS):
    return ("From: Alice <alice@%s>\nTo: <%s>\nSubject: %s\nDate: Thu, 03 Dec 2026 10:00:00 +0000\n"
            "Message-ID: <1@%s>\n\n%s" % (sender, RCPT, subject, sender, body)).encode()


def signed(private, text=None, selector=b"sel", domain=THEIRS):
    text = text or message()
    return dkim.sign(text, selector, domain.encode(), private, linesep=b"\n") + text


def deliver(tmp_path, dns_server, data, line="dkim", ip="192.0.2.25", relay=False, **extra):
    """Send ``data`` through dkim, rcpt_ok and queue/maildir; (replies, stored message or None, dkim_results note).

    ``relay``: the client is a relay client (``relay`` plugin, relayclients).
    """
    maildir = tmp_path / "Maildir"
    if relay:
        extra["relayclients"] = ip
    smtpd = make_smtpd(tmp_path, plugins=["relay"] * relay + [line, "rcpt_ok", "queue/maildir %s" % maildir],
                       config=config(dns_server, **extra))
    session = TestSession(smtpd, remote_ip=ip)
    notes = {}
    session.mock_hook("queue_pre", lambda plugin, transaction: notes.update(transaction.notes))
    session.mock_hook("data_post", lambda plugin, transaction: notes.update(transaction.notes), name="capture2")
    replies = session.send_message("alice@%s" % THEIRS, [RCPT], data)
    stored = list((maildir / "new").iterdir()) if (maildir / "new").is_dir() else []
    return replies, (stored[0].read_bytes() if stored else None), notes.get("dkim_results")


def field(stored: bytes, name: str) -> str:
    """The value of the first ``name`` field of a stored message, continuation lines included ("" if none)."""
    match = re.search(rb"^%s: (.*(?:\n[ \t].*)*)" % name.encode(), stored.split(b"\n\n")[0], re.M)
    return match.group(1).decode() if match else ""


def auth_results(stored: bytes) -> str:
    return field(stored, "Authentication-Results")


def test_signed_message_passes(tmp_path, dns_server, keys):
    """A message the test signed is stored with dkim=pass, d=, s= and the first 8 characters of b=."""
    data = signed(keys["theirs"])
    b = dkim.util.parse_tag_value(re.sub(r"\s+", "", field(data, "DKIM-Signature")).encode())[b"b"][:8].decode()
    replies, stored, results = deliver(tmp_path, dns_server, data)
    assert replies[-1].code == 250
    assert auth_results(stored) == "mx.test; dkim=pass header.d=%s header.s=sel header.b=%s" % (
        THEIRS, b if re.fullmatch(r"[A-Za-z0-9+.]+", b) else '"%s"' % b)
    assert results == [{"domain": THEIRS, "selector": "sel", "result": "pass"}]


def test_tampered_body_fails_and_is_refused(tmp_path, dns_server, keys):
    """A body changed after signing is dkim=fail; the default reject 1 refuses it with 552 5.7.20."""
    data = signed(keys["theirs"]).replace(b"Hi there.", b"Hi there!")
    replies, stored, results = deliver(tmp_path, dns_server, data)
    assert (replies[-1].code, replies[-1].status) == (552, "5.7.20")
    assert stored is None
    assert results == [{"domain": THEIRS, "selector": "sel", "result": "fail"}]


def test_tampered_header_fails_reject_0_stores_it(tmp_path, dns_server, keys):
    """With reject 0 (qpsmtpd's config.sample) a changed Subject is stored, marked dkim=fail."""
    data = signed(keys["theirs"]).replace(b"Subject: hello", b"Subject: HELLO")
    replies, stored, _ = deliver(tmp_path, dns_server, data, line="dkim reject 0")
    assert replies[-1].code == 250
    assert "dkim=fail header.d=%s header.s=sel" % THEIRS in auth_results(stored)


def test_reject_temp_refuses_with_4xx(tmp_path, dns_server, keys):
    """reject_type temp turns the refusal into 452 4.7.20."""
    data = signed(keys["theirs"]).replace(b"Hi there.", b"Hi there!")
    replies, _, _ = deliver(tmp_path, dns_server, data, line="dkim reject_type temp")
    assert (replies[-1].code, replies[-1].status) == (452, "4.7.20")


@pytest.mark.parametrize("selector", [b"nokey", b"bad"])
def test_unknown_or_broken_key_is_permerror(tmp_path, dns_server, keys, selector):
    """No key record, or one that holds no usable key: permerror (RFC 8601), accepted even with reject 1."""
    replies, stored, results = deliver(tmp_path, dns_server, signed(keys["theirs"], selector=selector))
    assert replies[-1].code == 250
    assert "dkim=permerror header.d=%s header.s=%s" % (THEIRS, selector.decode()) in auth_results(stored)
    assert results[0]["result"] == "permerror"


@pytest.mark.parametrize("selector", [b"servfail", b"slow"])
def test_key_lookup_trouble_is_temperror_and_4xx(tmp_path, dns_server, keys, selector):
    """SERVFAIL or a lookup slower than dns_timeout: temperror, 452 4.4.3, never a 5xx."""
    replies, stored, results = deliver(tmp_path, dns_server, signed(keys["theirs"], selector=selector),
                                       dns_timeout="0.5")
    assert (replies[-1].code, replies[-1].status) == (452, "4.4.3")
    assert results == [{"domain": THEIRS, "selector": selector.decode(), "result": "temperror"}]


def test_temperror_with_reject_0_is_accepted(tmp_path, dns_server, keys):
    replies, stored, _ = deliver(tmp_path, dns_server, signed(keys["theirs"], selector=b"servfail"),
                                 line="dkim reject 0")
    assert replies[-1].code == 250
    assert "dkim=temperror" in auth_results(stored)


def test_every_signature_is_reported_and_one_pass_is_enough(tmp_path, dns_server, keys):
    """Two signatures, one good and one with no key: both in A-R, in order; the message passes."""
    data = signed(keys["theirs"], signed(keys["theirs"]), selector=b"nokey")
    replies, stored, results = deliver(tmp_path, dns_server, data)
    assert replies[-1].code == 250
    assert [r["result"] for r in results] == ["permerror", "pass"]
    assert re.search(r"dkim=permerror header\.d=\S+ header\.s=nokey .*; dkim=pass header\.d=\S+ header\.s=sel",
                     auth_results(stored).replace("\n", " "))


def test_unsigned_message_is_dkim_none(tmp_path, dns_server, keys):
    replies, stored, results = deliver(tmp_path, dns_server, message())
    assert replies[-1].code == 250
    assert auth_results(stored) == "mx.test; dkim=none"
    assert results == []


def test_garbage_signature_is_neutral(tmp_path, dns_server, keys):
    """A DKIM-Signature that does not parse is neutral (RFC 8601), accepted, no traceback."""
    data = b"DKIM-Signature: v=1; d=" + THEIRS.encode() + b"; s=sel; this is ; not=a; signature\n" + message()
    replies, stored, results = deliver(tmp_path, dns_server, data)
    assert replies[-1].code == 250
    assert results[0]["result"] == "neutral"
    assert "dkim=neutral header.d=%s header.s=sel" % THEIRS in auth_results(stored)


def test_relay_clients_are_not_verified(tmp_path, dns_server, keys):
    """Mail from a relay client is ours to sign, not to check (qpsmtpd): no dkim result, no refusal."""
    data = signed(keys["theirs"]).replace(b"Hi there.", b"Hi there!")
    replies, stored, results = deliver(tmp_path, dns_server, data, ip="127.0.0.1", relay=True)
    assert replies[-1].code == 250
    assert results is None
    assert b"dkim=" not in stored


def test_relay_mail_is_signed_over_a_real_socket(live_server, tmp_path, dns_server, keys):
    """A relay client's message is signed with config/dkim/<From domain> and verifies with dkimpy alone."""
    config_dir = tmp_path / "config"
    (config_dir / "dkim").mkdir(parents=True)
    os.symlink(keys["ours_dir"], config_dir / "dkim" / OURS)
    server = live_server(plugins=["relay", "dkim", "rcpt_ok", "queue/maildir %s" % (tmp_path / "Maildir")],
                         config=config(dns_server, relayclients="127.0.0.1"))
    with smtplib.SMTP(*server.address, timeout=10) as client:
        client.sendmail("bob@%s" % OURS, ["someone@elsewhere.test"], message(sender=OURS).replace(b"\n", b"\r\n"))
    [path] = (tmp_path / "Maildir" / "new").iterdir()
    stored = path.read_bytes()
    signature = dkim.util.parse_tag_value(re.sub(r"\s+", "", field(stored, "DKIM-Signature")).encode())
    assert (signature[b"d"], signature[b"s"], signature[b"c"]) == (OURS.encode(), b"relay1", b"relaxed/relaxed")
    signed_fields = signature[b"h"].split(b":")
    assert signed_fields.count(b"from") == 2  # From oversigned: a second From breaks the signature
    assert b"received" not in signed_fields and b"subject" in signed_fields
    assert dkim.verify(stored, dnsfunc=lambda name, timeout=5: txt_of(keys["zone"], name))
    assert not dkim.verify(stored.replace(b"Hi there.", b"Hi there!"),
                           dnsfunc=lambda name, timeout=5: txt_of(keys["zone"], name))


def test_relay_mail_without_a_key_goes_unsigned(tmp_path, dns_server, keys):
    replies, stored, _ = deliver(tmp_path, dns_server, message(sender="nokeys.test"), ip="127.0.0.1", relay=True)
    assert replies[-1].code == 250
    assert b"DKIM-Signature" not in stored


def test_key_directories_parent_and_symlink(tmp_path):
    """qpsmtpd's layout: a subdomain uses its parent's key; a symlinked domain signs as its target."""
    dkim_dir = tmp_path / "dkim"
    (dkim_dir / "example.org").mkdir(parents=True)
    (dkim_dir / "example.org" / "selector").write_text("may2013\n")
    (dkim_dir / "example.org" / "private").write_bytes(b"-----BEGIN RSA PRIVATE KEY-----\n")
    os.symlink("example.org", dkim_dir / "client.test")
    assert key_directory(dkim_dir, "mail.Example.ORG") == dkim_dir / "example.org"
    assert load_key(key_directory(dkim_dir, "client.test"))[:2] == ("example.org", "may2013")
    assert key_directory(dkim_dir, "example.net") is None
    assert key_directory(dkim_dir, "org") is None


def test_unknown_argument_stops_start_up(tmp_path):
    with pytest.raises(ConfigError, match="unknown argument 'sign'"):
        make_smtpd(tmp_path, plugins=["dkim sign 1"])


def test_keygen_output_works_end_to_end(live_server, tmp_path, dns_server):
    """bin/qpsmtpd-dkim-keygen writes the key; the TXT record it prints, published, verifies our signature."""
    domain = "keygen.dkim-keygen-test.example"
    config_dir = tmp_path / "config"
    result = subprocess.run([sys.executable, str(ROOT / "bin" / "qpsmtpd-dkim-keygen"), "--config-dir",
                             str(config_dir), "--bits", "1024", domain, "kg1"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (config_dir / "dkim" / domain).iterdir()) == ["dns", "private", "public", "selector"]
    [line] = [text.strip() for text in result.stdout.splitlines() if text.strip().startswith("kg1._domainkey.")]
    record = line.replace(" IN TXT ", " 300 IN TXT ")
    dns_server.add_zone("dkim-keygen-test.example.", [record])
    server = live_server(plugins=["relay", "dkim", "rcpt_ok", "queue/maildir %s" % (tmp_path / "Maildir")],
                         config=config(dns_server, relayclients="127.0.0.1"))
    with smtplib.SMTP(*server.address, timeout=10) as client:
        client.sendmail("bob@%s" % domain, [RCPT], message(sender=domain).replace(b"\n", b"\r\n"))
    [path] = (tmp_path / "Maildir" / "new").iterdir()
    assert dkim.verify(path.read_bytes(), dnsfunc=lambda name, timeout=5: txt_of([record], name))
    again = subprocess.run([sys.executable, str(ROOT / "bin" / "qpsmtpd-dkim-keygen"), "--config-dir",
                            str(config_dir), domain], capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "already exists" in again.stderr
