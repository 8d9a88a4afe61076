"""The user_config hook: per-address config values, asked before the config hook and the files."""
from qpgevent import DECLINED, DENY, OK


def threshold_gate(self, transaction, recipient, **params):
    """A rcpt plugin that refuses a recipient whose per-user 'spam_threshold' is 'reject-all'."""
    if self.qp.config("spam_threshold", address=recipient) == "reject-all":
        return DENY, "this user takes no mail"
    return OK


def per_user(self, transaction, address, name):
    if name == "spam_threshold" and address.user == "picky":
        return OK, "reject-all"
    return DECLINED


def test_user_config_answers_for_one_address(session_factory):
    """A user_config plugin's value reaches the asking plugin for that address; others get the file's value."""
    ts = session_factory(config={"spam_threshold": "5"})
    ts.mock_hook("user_config", per_user, name="directory")
    ts.mock_hook("rcpt", threshold_gate)
    ts.command("EHLO client.test")
    ts.command("MAIL FROM:<a@sender.test>")
    assert str(ts.command("RCPT TO:<picky@example.com>")[0]) == "550 5.7.1 this user takes no mail"
    assert ts.command("RCPT TO:<easy@example.com>")[0].code == 250
    assert ts.session.config("spam_threshold", address=ts.transaction.recipients[0]) == "5"
    assert ts.session.config("spam_threshold") == "5"


def test_without_an_address_user_config_is_not_asked(session_factory):
    """A plain config lookup never reaches user_config."""
    ts = session_factory(config={"spam_threshold": "5"})
    asked = []
    ts.mock_hook("user_config", lambda self, transaction, address, name: asked.append(name) or (OK, "x"))
    assert ts.session.config("spam_threshold") == "5"
    assert asked == []


def test_a_failing_user_config_falls_through(session_factory):
    """A user_config plugin that raises counts as declined: the file's value is used."""
    ts = session_factory(config={"spam_threshold": "5"})

    def broken(self, transaction, address, name):
        raise RuntimeError("directory down")
    ts.mock_hook("user_config", broken)
    ts.command("EHLO client.test")
    ts.command("MAIL FROM:<a@sender.test>")
    ts.mock_hook("rcpt", threshold_gate)
    assert ts.command("RCPT TO:<picky@example.com>")[0].code == 250
    assert ts.session.config("spam_threshold", address=ts.transaction.recipients[0]) == "5"
