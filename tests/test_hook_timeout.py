"""A plugin's own hook timeout (Plugin.set_hook_timeout) in place of plugin_timeout: used, and still a bound."""
import time

import pytest

from qpgevent.errors import ConfigError
from qpgevent.testing import TestSession, make_smtpd

SLOW_PLUGIN = '''"""Answers MAIL after 0.5 s; its argument, if any, is its mail hook's own timeout."""
import gevent

from qpgevent import DENY


def register(self, qp, *args):
    if args:
        self.set_hook_timeout(args[0], float(args[1]))


def hook_mail(self, transaction, sender, **params):
    gevent.sleep(0.5)
    return DENY, "5.7.1 slow but heard"
'''


def session_for(tmp_path, line):
    """A session whose MAIL runs the slow plugin configured by ``line``, under plugin_timeout 0.2 s."""
    plugins = tmp_path / "myplugins"
    plugins.mkdir(parents=True, exist_ok=True)
    (plugins / "slow.py").write_text(SLOW_PLUGIN)
    smtpd = make_smtpd(tmp_path, [line, "rcpt_ok"], {"plugin_dirs": str(plugins), "plugin_timeout": "0.2"})
    session = TestSession(smtpd)
    session.command("HELO client.test")
    return session


def test_a_hook_with_its_own_longer_timeout_runs_past_plugin_timeout(tmp_path):
    """set_hook_timeout("mail", 2): the 0.5 s hook outlives plugin_timeout (0.2 s) and its answer is the reply."""
    session = session_for(tmp_path, "slow mail 2")
    [reply] = session.command("MAIL FROM:<a@b.test>")
    assert (reply.code, reply.status) == (550, "5.7.1") and reply.text.endswith("slow but heard")


def test_without_its_own_timeout_the_hook_is_cut_at_plugin_timeout(tmp_path):
    """No declaration (or one for another hook): cut after 0.2 s, 451 4.3.0, logged as past plugin_timeout."""
    for line in ("slow", "slow rcpt 2"):
        session = session_for(tmp_path / line.replace(" ", "-"), line)
        logged = session.capture_log()
        started = time.monotonic()
        [reply] = session.command("MAIL FROM:<a@b.test>")
        assert (reply.code, reply.status) == (451, "4.3.0")
        assert time.monotonic() - started < 0.45
        assert any("ran longer than plugin_timeout (0.2s)" in entry[3] for entry in logged)


def test_its_own_timeout_is_a_bound_too(tmp_path):
    """A declared 0.3 s (longer than plugin_timeout, shorter than the hook): cut after 0.3 s, 451 4.3.0."""
    session = session_for(tmp_path, "slow mail 0.3")
    logged = session.capture_log()
    started = time.monotonic()
    [reply] = session.command("MAIL FROM:<a@b.test>")
    assert (reply.code, reply.status) == (451, "4.3.0")
    assert 0.25 < time.monotonic() - started < 0.48
    assert any("ran longer than its hook timeout (0.3s)" in entry[3] for entry in logged)


@pytest.mark.parametrize("line, problem", [
    ("slow mial 2", "set_hook_timeout: unknown hook 'mial'"),
    ("slow mail 0", "set_hook_timeout: 0.0 is not a number of seconds above 0"),
    ("slow mail inf", "set_hook_timeout: inf is not a number of seconds above 0"),
])
def test_a_bad_hook_timeout_stops_the_start_up(tmp_path, line, problem):
    """An unknown hook or a timeout that is no bound: the plugin refuses to start, saying why."""
    with pytest.raises(ConfigError) as caught:
        session_for(tmp_path, line)
    assert problem in str(caught.value)
