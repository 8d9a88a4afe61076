"""What ``self.qp`` is where (qpgevent/plugin.py): the session in hooks and in ``self.spawn`` greenlets,
the daemon while plugins load, and a clear error in a greenlet the plugin started on its own."""
import gevent
import pytest

from qpgevent import LOGWARN
from qpgevent.testing import TestSession, make_smtpd

PLUGIN = '''
import gevent
from qpgevent import DECLINED, LOGWARN, OK

def register(self, qp, *args):
    self.me_at_load = self.qp.me            # the daemon: start-up code keeps working
    self.transaction_at_load = self.transaction

def hook_rcpt(self, transaction, recipient, **params):
    notes = self.qp.connection.notes
    if recipient.user == "spawn":
        notes["child"] = self.spawn(lambda: self.qp.connection.id)
    elif recipient.user == "plain":
        notes["child"] = gevent.spawn(lambda: self.qp.connection.id)
    elif recipient.user == "log":
        notes["child"] = gevent.spawn(self.log, LOGWARN, "from a plain greenlet")
    elif recipient.user == "linger":
        notes["child"] = self.spawn(gevent.sleep, 60)
    return OK
'''


@pytest.fixture
def session(tmp_path):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "context.py").write_text(PLUGIN)
    smtpd = make_smtpd(tmp_path, plugins=["context"], config={"plugin_dirs": str(tmp_path / "plugins")})
    session = TestSession(smtpd)
    session.command("EHLO client.test")
    session.command("MAIL FROM:<a@b.test>")
    return session


def child(session, user):
    assert session.command("RCPT TO:<%s@example.com>" % user)[0].code == 250
    greenlet = session.connection.notes["child"]
    greenlet.join(5)
    return greenlet


def test_register_sees_the_daemon(session):
    [plugin] = session.smtpd.plugins
    assert (plugin.me_at_load, plugin.transaction_at_load) == ("mx.test", None)


def test_spawn_keeps_the_session(session):
    assert child(session, "spawn").value == session.connection.id


def test_qp_in_a_plain_greenlet_is_a_clear_error_not_the_daemon(session):
    greenlet = child(session, "plain")
    assert isinstance(greenlet.exception, RuntimeError)
    assert "plugin context used self.qp" in str(greenlet.exception) and "self.spawn" in str(greenlet.exception)


def test_log_works_in_a_plain_greenlet(session):
    logged = session.capture_log()
    assert child(session, "log").successful()
    assert (LOGWARN, "", "context", "from a plain greenlet") in logged


def test_spawned_greenlets_end_with_the_session(session):
    assert session.command("RCPT TO:<linger@example.com>")[0].code == 250
    greenlet = session.connection.notes["child"]
    session.command("QUIT")
    greenlet.join(5)
    assert greenlet.dead and isinstance(greenlet.value, gevent.GreenletExit)
