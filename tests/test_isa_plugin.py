"""isa_plugin: a plugin that is a variant of another (qpsmtpd's docs/advanced.md rcpt_ok_maxrelay example)."""
import textwrap

import pytest

from qpgevent.errors import ConfigError
from qpgevent.testing import TestSession, make_smtpd

MAXRELAY = """\
    '''rcpt_ok_maxrelay [MAX]: rcpt_ok that drops the client after MAX refused relaying attempts (default 5).'''
    from qpgevent import DENY, DENY_DISCONNECT


    def init(self, qp, *args):
        self.max_relay = int(args[0]) if args else 5
        self.parent = self.isa_plugin("rcpt_ok")


    def hook_rcpt(self, transaction, recipient, **params):
        result = self.parent.hook_rcpt(self, transaction, recipient, **params)
        code = result[0] if isinstance(result, tuple) else result
        if code != DENY or not self.max_relay:
            return result
        notes = self.connection.notes
        notes["count_relay_attempts"] = notes.get("count_relay_attempts", 0) + 1
        if notes["count_relay_attempts"] <= self.max_relay:
            return result
        return DENY_DISCONNECT, "Too many relaying attempts"
    """


@pytest.fixture
def smtpd(tmp_path):
    plugins = tmp_path / "mine"
    plugins.mkdir()
    (plugins / "rcpt_ok_maxrelay.py").write_text(textwrap.dedent(MAXRELAY))
    (plugins / "greeter.py").write_text(textwrap.dedent("""\
        from qpgevent import DENY

        def hook_connect(self, transaction):
            return DENY, "refused by the parent"
        """))
    (plugins / "child.py").write_text(textwrap.dedent("""\
        def init(self, qp, *args):
            self.isa_plugin("greeter")
        """))
    return lambda lines: make_smtpd(tmp_path, lines, {"plugin_dirs": str(plugins), "me": "example.com",
                                                      "rcpthosts": "example.com"})


def test_the_variant_calls_its_parents_hook_and_changes_the_result(smtpd):
    session = TestSession(smtpd(["rcpt_ok_maxrelay 2", "queue/discard"]))
    session.start()
    session.command("HELO client.test")
    session.command("MAIL FROM:<a@client.test>")
    assert session.command("RCPT TO:<b@example.com>")[0].code == 250  # the parent's accept passes through
    for _ in range(2):
        assert str(session.command("RCPT TO:<b@elsewhere.test>")[0]) == "550 5.7.1 Relaying denied (#5.7.1)"
    [refused] = session.command("RCPT TO:<b@elsewhere.test>")
    assert refused.code == 550 and "Too many relaying attempts" in refused.text
    assert session.closed


def test_hooks_the_variant_does_not_define_come_from_the_parent(smtpd):
    session = TestSession(smtpd(["child", "rcpt_ok", "queue/discard"]))
    [greeting] = session.start()
    assert (greeting.code, greeting.text) == (554, "5.7.1 refused by the parent")


def test_a_missing_parent_stops_start_up_at_the_line(tmp_path):
    plugins = tmp_path / "mine"
    plugins.mkdir()
    (plugins / "orphan.py").write_text("def init(self, qp, *args):\n    self.isa_plugin('no_such_parent')\n")
    with pytest.raises(ConfigError) as caught:
        make_smtpd(tmp_path, ["rcpt_ok", "orphan"], {"plugin_dirs": str(plugins)})
    assert caught.value.line == 2 and "isa_plugin: no plugin 'no_such_parent'" in str(caught.value)
