"""whitelist: listed hosts, HELO names, senders and recipients answer OK and leave the notes later plugins read."""
import smtplib

import pytest

from qpgevent import OK
from qpgevent.errors import ConfigError
from qpgevent.testing import TestSession

CONFIG = {
    "rcpthosts": ["example.com"],
    "whitelisthosts": ["192.0.2.7", "198.51.100.0/24", "10.1.", "2001:db8:5::/48"],
    "whitelisthelo": ["Trusted.Example"],
    "whitelistsenders": ["boss@partner.test", "@friends.test", "family.test"],
    "whitelistrcpt": ["postmaster@example.com", "partner.test"],
    "badmailfrom": ["@partner.test", "@friends.test", "@family.test", "@spam.test"],
    "badrcptto": ["postmaster@example.com", "abuse@example.com"],
}
PLUGINS = ["whitelist", "badmailfrom", "badrcptto", "rcpt_ok"]


@pytest.fixture
def smtpd(smtpd_factory):
    return smtpd_factory(PLUGINS, CONFIG)


@pytest.mark.parametrize("ip, listed", [
    ("192.0.2.7", True), ("192.0.2.8", False), ("198.51.100.99", True), ("10.1.2.3", True), ("10.10.2.3", False),
    ("2001:db8:5::1", True), ("2001:db8:6::1", False),
])
def test_whitelisthosts(smtpd, ip, listed):
    """A listed client gets the whitelisthost note and 5 karma, and badmailfrom after it is immune."""
    ts = TestSession(smtpd, remote_ip=ip)
    assert bool(ts.connection.notes.get("whitelisthost")) is listed
    assert ts.connection.notes.get("karma", 0) == (5 if listed else 0)
    ts.command("EHLO client.test")
    assert ts.command("MAIL FROM:<x@spam.test>")[0].code == (250 if listed else 550)


REFUSE_CONNECT = """
from qpgevent import DENY

def hook_connect(self, transaction):
    return DENY
"""


def test_whitelisthost_answers_ok_at_connect(smtpd_factory, tmp_path):
    """OK at connect: later connect plugins are not asked (their refusal never comes)."""
    (tmp_path / "test-plugins").mkdir()
    (tmp_path / "test-plugins" / "refuse_connect.py").write_text(REFUSE_CONNECT)
    smtpd = smtpd_factory(["whitelist", "refuse_connect"] + PLUGINS[1:],
                          dict(CONFIG, plugin_dirs=str(tmp_path / "test-plugins")))
    assert TestSession(smtpd, remote_ip="192.0.2.7").greeting[0].code == 220
    assert TestSession(smtpd, remote_ip="192.0.2.8").greeting[0].code == 554


def test_whitelistclient_variable(smtpd):
    """WHITELISTCLIENT in the environment sets whitelistclient, which is not immunity."""
    ts = TestSession(smtpd, remote_ip="203.0.113.1", greet=False)
    ts.session.env["WHITELISTCLIENT"] = ""
    ts.start()
    assert ts.connection.notes.get("whitelistclient") and not ts.connection.notes.get("whitelisthost")
    ts.command("HELO client.test")
    assert ts.command("MAIL FROM:<x@spam.test>")[0].code == 550


@pytest.mark.parametrize("helo, listed", [("trusted.example", True), ("TRUSTED.EXAMPLE", True), ("other.example", False)])
def test_whitelisthelo(smtpd, helo, listed):
    """A listed HELO name (any case) sets the whitelisthelo note."""
    ts = TestSession(smtpd, remote_ip="203.0.113.1")
    assert ts.command("EHLO %s" % helo)[0].code == 250
    assert bool(ts.connection.notes.get("whitelisthelo")) is listed


@pytest.mark.parametrize("sender, listed", [
    ("boss@partner.test", True), ("Boss@Partner.TEST", True), ("intern@partner.test", False),
    ("anyone@friends.test", True), ("anyone@family.test", True), ("anyone@sub.family.test", False),
])
def test_whitelistsenders(smtpd, sender, listed):
    """A listed sender (address or domain) gets the whitelistsender note and skips badmailfrom (OK at mail)."""
    ts = TestSession(smtpd, remote_ip="203.0.113.1")
    ts.command("HELO client.test")
    reply = ts.command("MAIL FROM:<%s>" % sender)[0]
    assert bool(ts.transaction.notes.get("whitelistsender")) is listed
    assert reply.code == 250 or not listed   # every listed one is in badmailfrom too


def test_whitelistsender_makes_later_rcpt_plugins_immune(smtpd):
    """The whitelistsender note holds for the transaction: badrcptto (is_immune) lets its recipients through."""
    ts = TestSession(smtpd, remote_ip="203.0.113.1")
    ts.command("HELO client.test")
    ts.command("MAIL FROM:<boss@partner.test>")
    assert ts.command("RCPT TO:<abuse@example.com>")[0].code == 250


def test_whitelistrcpt_counts_and_accepts(smtpd):
    """A listed recipient is accepted at once (OK at rcpt: badrcptto after it is not asked); the note counts them."""
    ts = TestSession(smtpd, remote_ip="203.0.113.1")
    ts.command("HELO client.test")
    ts.command("MAIL FROM:<a@sender.test>")
    assert ts.command("RCPT TO:<postmaster@example.com>")[0].code == 250
    assert ts.command("RCPT TO:<abuse@example.com>")[0].code == 550
    assert ts.command("RCPT TO:<someone@partner.test>")[0].code == 250   # OK at rcpt: even outside rcpthosts
    assert ts.transaction.notes["whitelistrcpt"] == 2


def test_per_recipient_uses_the_recipients_lists(smtpd_factory):
    """per_recipient 1: every check runs at rcpt, with that recipient's lists (user_config) merged with the global."""
    smtpd = smtpd_factory(["whitelist per_recipient 1", "badrcptto", "rcpt_ok"], CONFIG)
    ts = TestSession(smtpd, remote_ip="203.0.113.1")

    def user_config(plugin, transaction, address, name):
        if address.user == "abuse" and name == "whitelistsenders":
            return OK, "reporter@watch.test"
        return None
    ts.mock_hook("user_config", user_config)
    ts.command("HELO client.test")
    ts.command("MAIL FROM:<reporter@watch.test>")
    assert ts.command("RCPT TO:<abuse@example.com>")[0].code == 250      # the user's own list
    assert ts.command("RCPT TO:<postmaster@example.com>")[0].code == 250  # the global whitelistrcpt
    ts.command("RSET")
    ts.command("MAIL FROM:<boss@partner.test>")
    assert ts.command("RCPT TO:<abuse@example.com>")[0].code == 250      # merged: the global senders too


def test_bad_argument_stops_the_start_up(smtpd_factory):
    """A wrong per_recipient value is a start-up error saying what it takes."""
    with pytest.raises(ConfigError, match="per_recipient takes 1 or 0"):
        smtpd_factory(["whitelist per_recipient sometimes"])


def test_live_whitelisted_source_address(live_server):
    """Over real sockets from two source addresses: 127.0.0.2 is whitelisted past badmailfrom, 127.0.0.3 is not."""
    server = live_server(plugins=PLUGINS + ["queue/discard"],
                         config=dict(CONFIG, whitelisthosts=["127.0.0.2"]))
    answers = {}
    for source in ("127.0.0.2", "127.0.0.3"):
        with smtplib.SMTP(timeout=10, source_address=(source, 0)) as client:
            client.connect(*server.address)
            client.ehlo("client.test")
            answers[source] = client.mail("x@spam.test")[0]
    assert answers == {"127.0.0.2": 250, "127.0.0.3": 550}
