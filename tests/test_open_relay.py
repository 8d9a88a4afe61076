"""The bundled config/ is no open relay: without AUTH or a relayclients entry nothing is accepted for a
foreign domain, whatever the client sends.

"Relaying" is accepting a recipient whose domain is not ours: a forwarding queue would send it on.  The
domain that counts is the one after the last ``@`` of the path, after any source route, as every MTA
downstream would route it.  ``u%foreign@example.com`` and ``foreign!u@example.com`` are local addresses
of example.com to the core and to rcpt_ok; the bundled queue delivers them into the local Maildir (see
docs/security.md for a queue that forwards to an MTA honouring the percent hack).
"""
import re
import shutil
import smtplib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qpgevent.smtpd import Smtpd
from qpgevent.testing import LiveServer, TestSession

BUNDLED = Path(__file__).resolve().parent.parent / "config"
LOCAL_DOMAINS = {"example.com", "localhost"}  # rcpthosts and me of the bundled config


def bundled_copy(directory):
    """config/ copied into ``directory``, the Maildir path pointed there too; returns the config dir."""
    target = Path(directory) / "config"
    shutil.copytree(BUNDLED, target)
    plugins = (target / "plugins").read_text()
    assert "queue/maildir ./Maildir" in plugins, "the bundled plugins file changed; update this test"
    maildir = Path(directory) / "Maildir"
    (target / "plugins").write_text(plugins.replace("queue/maildir ./Maildir", "queue/maildir %s" % maildir))
    return target


@pytest.fixture(scope="module")
def bundled(tmp_path_factory):
    """A daemon loaded from a copy of the bundled config/."""
    directory = tmp_path_factory.mktemp("bundled")
    smtpd = Smtpd(bundled_copy(directory))
    smtpd.maildir = directory / "Maildir"
    return smtpd


def final_domain(line):
    """The domain a RCPT command's path routes to, found independently of the core's parser: the text between
    the first ``<`` and the last ``>``, less a source route, after the last ``@``; None when there is none."""
    start, end = line.find("<"), line.rfind(">")
    path = line[start + 1:end] if 0 <= start < end else line.split(":", 1)[-1].strip().split(" ")[0]
    path = re.sub(r"^@[^:]*:", "", path.strip())
    if "@" not in path:
        return None
    return path.rpartition("@")[2].strip().lower().rstrip(".")


def is_local(line):
    domain = final_domain(line)
    if domain is None:  # only <postmaster> and <abuse> may go without a domain: they are ours
        return re.search(r"<\s*(@[^:]*:)?(postmaster|abuse)\s*>", line, re.IGNORECASE) is not None
    return domain in LOCAL_DOMAINS


FOREIGN_PATHS = [
    "u@foreign.test", "U@FOREIGN.TEST", "u@foreign.test.", "u@Foreign.Test..",
    "@example.com:u@foreign.test", "@example.com,@localhost:u@foreign.test", "@foreign.test:u@example.com",
    "u@example.com@foreign.test", "u@foreign.test@example.com", '"u@foreign.test"@example.com',
    '"u@example.com"@foreign.test', "u%foreign.test@example.com", "foreign.test!u@example.com",
    "u%example.com@foreign.test", "postmaster@foreign.test", "postmaster", "PostMaster", "abuse",
    "u@[127.0.0.1]", "u@[IPv6:::1]", "u@[192.0.2.1]", "u@example.com.foreign.test", "u@foreignexample.com",
    "u@sub.example.com", "u@localhost", "u@LOCALHOST.", "u@localhost.foreign.test", "u@example.com",
    "u@EXAMPLE.COM.", " u@foreign.test ", "u@example.com ", "u@ex\u0430mple.com", "u@\u0435xample.com",
    "u@example\u3002com", "u@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com", "u@ex\u00e4mple.com",
    "\u00fc@example.com", "\u00fc@foreign.test", "u@xn--exmple-cua.com", "u@example.com\u3002foreign.test",
]
RCPT_FORMS = ["RCPT TO:<{}>", "RCPT TO: <{}>", "rcpt to:<{}>", "RCPT TO:{}", "RCPT TO:<{}> NOTIFY=NEVER",
              "RCPT TO:<{}> ORCPT=rfc822;postmaster@example.com"]
HELLOS = ["EHLO client.test", "HELO client.test", "EHLO localhost", "EHLO example.com", "HELO [127.0.0.1]",
          "EHLO [IPv6:::1]", "EHLO"]
MAILS = ["MAIL FROM:<a@sender.test>", "MAIL FROM:<>", "MAIL FROM:<postmaster@example.com>", "MAIL FROM:<root@localhost>",
         "MAIL FROM:<u@example.com> AUTH=u@example.com", "MAIL FROM:<j\u00f6s\u00e9@ex\u00e4mple.test> SMTPUTF8",
         "MAIL FROM:<a@sender.test> SMTPUTF8", "MAIL FROM:<@example.com:a@sender.test>"]
OTHERS = ["RSET", "NOOP", "AUTH PLAIN AHUAcA==", "AUTH LOGIN", "STARTTLS", "XCLIENT ADDR=127.0.0.1",
          "XFORWARD ADDR=127.0.0.1", "PROXY TCP4 127.0.0.1 127.0.0.1 4000 25", "VRFY postmaster", "DATA"]
CLIENT_IPS = ["127.0.0.1", "::1", "192.168.1.10", "10.0.0.1", "203.0.113.5", "::ffff:127.0.0.1"]

rcpt_lines = st.builds(lambda form, path: form.format(path), st.sampled_from(RCPT_FORMS),
                       st.one_of(st.sampled_from(FOREIGN_PATHS),
                                 st.builds("{}@{}".format,
                                           st.text(st.characters(min_codepoint=33, max_codepoint=0x2fff,
                                                                 blacklist_characters="<>"), min_size=1, max_size=8),
                                           st.sampled_from(["foreign.test", "example.com", "localhost", "x.test"]))))
commands = st.lists(st.one_of(st.sampled_from(HELLOS), st.sampled_from(MAILS), st.sampled_from(OTHERS), rcpt_lines,
                              rcpt_lines, rcpt_lines), min_size=1, max_size=25)


def check_sequence(smtpd, remote_ip, lines):
    """Send ``lines`` one by one; every RCPT answered 250 must route to one of our domains."""
    session = TestSession(smtpd, remote_ip=remote_ip)
    assert not session.connection.relay_client
    for line in lines:
        replies = session.command(line)
        if session.closed:
            break
        if line.upper().startswith("DATA") and replies and replies[-1].code == 354:
            replies = session.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        if line[:4].upper() == "RCPT" and replies and replies[-1].code == 250:
            assert is_local(line), "relayed: %r -> %s" % (line, replies[-1])
        for recipient in session.transaction.recipients:
            host = (recipient.host or "").lower().rstrip(".")
            assert host in LOCAL_DOMAINS or (not host and recipient.user.lower() in ("postmaster", "abuse")), recipient
    assert not session.connection.relay_client


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(remote_ip=st.sampled_from(CLIENT_IPS), lines=commands)
def test_no_command_sequence_relays(bundled, remote_ip, lines):
    """Random sequences of greetings, senders (null, local, spoofed, UTF-8), AUTH/XCLIENT/PROXY attempts and
    recipients (source routes, percent hack, bang paths, quoted @, IP literals, case tricks, trailing dots,
    UTF-8 and fullwidth lookalikes) from loopback, private and public addresses: no foreign RCPT is accepted."""
    check_sequence(bundled, remote_ip, ["EHLO client.test", "MAIL FROM:<a@sender.test> SMTPUTF8"] + lines)


@pytest.mark.parametrize("path", FOREIGN_PATHS)
@pytest.mark.parametrize("remote_ip", ["127.0.0.1", "203.0.113.5"])
def test_each_trick_alone(bundled, path, remote_ip):
    """Each address trick in its own transaction, with and without SMTPUTF8: accepted only if it routes to
    example.com or localhost."""
    for mail in ("MAIL FROM:<a@sender.test>", "MAIL FROM:<a@sender.test> SMTPUTF8"):
        check_sequence(bundled, remote_ip, ["EHLO client.test", mail, "RCPT TO:<%s>" % path])


@pytest.mark.parametrize("path, accepted", [
    ("u@foreign.test", False),
    ("@example.com:u@foreign.test", False),
    ("u@example.com@foreign.test", False),
    ("u@[127.0.0.1]", False),
    ("u@ex\u0430mple.com", False),
    ("u@example.com", True),
    ("postmaster", True),
    ("u@LOCALHOST.", True),
])
def test_known_answers(bundled, path, accepted):
    """Spot checks that the property test above is not vacuous: local paths are accepted, foreign ones 550 or 501."""
    session = TestSession(bundled, remote_ip="203.0.113.5")
    session.command("EHLO client.test")
    session.command("MAIL FROM:<a@sender.test> SMTPUTF8")
    [reply] = session.command("RCPT TO:<%s>" % path)
    assert (reply.code == 250) == accepted, reply
    if not accepted:
        assert reply.code in (501, 550, 553)


def test_relayclients_entry_is_what_allows_relaying(tmp_path):
    """The same config with the client in relayclients relays: the refusals above come from the config."""
    config = bundled_copy(tmp_path)
    (config / "relayclients").write_text("203.0.113.5\n")
    session = TestSession(Smtpd(config), remote_ip="203.0.113.5")
    session.command("EHLO client.test")
    session.command("MAIL FROM:<a@sender.test>")
    assert session.command("RCPT TO:<u@foreign.test>")[0].code == 250
    other = TestSession(Smtpd(config), remote_ip="203.0.113.6")
    other.command("EHLO client.test")
    other.command("MAIL FROM:<a@sender.test>")
    assert other.command("RCPT TO:<u@foreign.test>")[0].code == 550


def test_percent_hack_and_bang_path_stay_local(tmp_path):
    """Over a real socket with the bundled config: ``u%foreign.test@example.com`` and ``foreign.test!u@example.com``
    are either refused or delivered into the local Maildir (addressed to example.com), never relayed; a foreign
    recipient is refused."""
    config = bundled_copy(tmp_path)
    with LiveServer(config, cwd=tmp_path) as server:
        with smtplib.SMTP(*server.address, timeout=10) as client:
            client.ehlo("client.test")
            client.mail("a@sender.test")
            codes = {path: client.rcpt(path)[0] for path in
                     ["u%foreign.test@example.com", "foreign.test!u@example.com", "u@foreign.test"]}
            assert codes["u@foreign.test"] == 550
            local = [path for path in codes if codes[path] == 250]
            if local:
                assert client.data(b"Subject: percent\r\n\r\nhello\r\n")[0] == 250
    delivered = list((tmp_path / "Maildir" / "new").iterdir()) if local else []
    assert len(delivered) == (1 if local else 0)
    for path in local:
        assert ("Delivered-To: %s" % path).encode() in delivered[0].read_bytes()
