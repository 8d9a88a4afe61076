"""dont_require_anglebrackets: MAIL FROM and RCPT TO work without <>."""
import pytest

from qpgevent.errors import ConfigError

CONFIG = {"rcpthosts": ["example.com"]}
PLUGINS = ["dont_require_anglebrackets", "rcpt_ok"]


def test_without_the_plugin_bare_addresses_are_refused(session_factory):
    """The core alone refuses MAIL FROM:user@host (the behaviour this plugin relaxes)."""
    ts = session_factory(["rcpt_ok"], CONFIG)
    ts.command("EHLO client.test")
    assert ts.command("MAIL FROM:user@sender.test")[0].code == 501


def test_bare_addresses_get_brackets(session_factory):
    """MAIL FROM:user@host and RCPT TO:user@host are accepted as if bracketed; parameters still work."""
    ts = session_factory(PLUGINS, CONFIG)
    ts.command("EHLO client.test")
    assert [str(r) for r in ts.command("MAIL FROM:user@sender.test SIZE=100")] == [
        "250 2.1.0 <user@sender.test>, sender OK - how exciting to get mail from you!"]
    assert [str(r) for r in ts.command("RCPT TO: u@example.com")] == ["250 2.1.5 <u@example.com>, recipient ok"]
    assert ts.transaction.sender.address == "user@sender.test"
    assert ts.transaction.notes["mail_parameters"] == {"size": "100"}
    assert [r.address for r in ts.transaction.recipients] == ["u@example.com"]
    assert ts.connection.notes["karma"] == -4


def test_bracketed_addresses_are_left_alone(session_factory):
    """Well-formed paths pass untouched and cost no karma; <> stays the null sender."""
    ts = session_factory(PLUGINS, CONFIG)
    ts.command("EHLO client.test")
    assert ts.command("MAIL FROM:<>")[0].code == 250
    assert ts.command("RCPT TO:<u@example.com>")[0].code == 250
    assert ts.transaction.sender.is_null
    assert "karma" not in ts.connection.notes


def test_empty_path_is_still_refused(session_factory):
    """MAIL FROM: with nothing after it is not turned into the null sender."""
    ts = session_factory(PLUGINS, CONFIG)
    ts.command("EHLO client.test")
    assert ts.command("MAIL FROM:")[0].code == 501


def test_repaired_address_is_still_checked(session_factory):
    """A bare address that is not a valid path stays refused after the brackets are added."""
    ts = session_factory(PLUGINS, CONFIG)
    ts.command("EHLO client.test")
    assert ts.command("MAIL FROM:no-domain")[0].code == 501
    ts.command("MAIL FROM:a@sender.test")
    assert ts.command("RCPT TO:someone@elsewhere.test")[0].code == 550


def test_arguments_are_refused(smtpd_factory):
    """The plugin takes no arguments (but loglevel)."""
    smtpd_factory(["dont_require_anglebrackets loglevel 7"])
    with pytest.raises(ConfigError):
        smtpd_factory(["dont_require_anglebrackets 1"])
