"""naughty: the deferred rejections of `reject naughty` plugins are given at the configured hook."""
import smtplib

import pytest

from qpgevent.errors import ConfigError
from qpgevent.testing import RawClient, TestSession

# A test plugin that fails every client at connect through get_reject: with `reject naughty` the refusal is deferred.
MARK = '''"""mark: every client fails at connect (message: MARKED)."""
from qpgevent import DECLINED

def hook_connect(self, transaction):
    if self.is_immune():
        return DECLINED
    return self.get_reject("MARKED as naughty", "test plugin")
'''
RCPTHOSTS = {"rcpthosts": ["example.com"]}


@pytest.fixture
def plugin_dir(tmp_path):
    directory = tmp_path / "test-plugins"
    directory.mkdir()
    (directory / "mark.py").write_text(MARK)
    return {"plugin_dirs": str(directory), **RCPTHOSTS}


@pytest.fixture
def session(smtpd_factory, plugin_dir):
    """``session(plugins, **config)`` -> a greeted in-memory session with the mark plugin available."""
    def make(plugins, remote_ip="192.0.2.9", **config):
        return TestSession(smtpd_factory(plugins, {**plugin_dir, **config}), remote_ip=remote_ip)
    return make


def envelope(ts):
    return [r.code for r in ts.command("EHLO client.test") + ts.command("MAIL FROM:<a@sender.test>")]


def test_default_refuses_at_rcpt_and_disconnects(session):
    """Greeted and let through MAIL; the first RCPT gets the stored refusal (5.7.1 is the core's) and the end."""
    ts = session(["mark reject naughty", "naughty", "rcpt_ok"])
    assert [r.code for r in ts.greeting] == [220]
    assert envelope(ts) == [250, 250]
    [reply] = ts.command("RCPT TO:<u@example.com>")
    assert str(reply) == "550 5.7.1 (mark) MARKED as naughty"
    assert ts.closed


@pytest.mark.parametrize("hook, refused_at", [("connect", "greeting"), ("mail", "MAIL"), ("data", "DATA"),
                                               ("data_post", "end of data")])
def test_reject_names_the_hook(session, hook, refused_at):
    ts = session(["mark reject naughty", "naughty reject %s" % hook, "rcpt_ok", "queue/discard"])
    steps = [("greeting", lambda: ts.greeting), ("EHLO", lambda: ts.command("EHLO client.test")),
             ("MAIL", lambda: ts.command("MAIL FROM:<a@sender.test>")),
             ("RCPT", lambda: ts.command("RCPT TO:<u@example.com>")), ("DATA", lambda: ts.command("DATA")),
             ("end of data", lambda: ts.send(b"Subject: x\r\n\r\nbody\r\n.\r\n"))]
    for name, step in steps:
        replies = step()
        if name == refused_at:
            assert replies[-1].code // 100 == 5 and replies[-1].text.endswith("(mark) MARKED as naughty")
            assert ts.closed
            return
        assert replies[-1].code in (220, 250, 354), name
    pytest.fail("never refused")


def test_data_post_catches_what_an_earlier_ok_let_past(session):
    """rcpt_ok before naughty answers every RCPT, so naughty's rcpt hook is never asked: data_post refuses."""
    ts = session(["mark reject naughty", "rcpt_ok", "naughty", "queue/discard"])
    replies = ts.send_message("a@sender.test", ["u@example.com"], "Subject: x\n\nbody\n")
    assert [r.code for r in replies[1:3]] == [250, 250]
    assert str(replies[3]) == "552 5.7.1 (mark) MARKED as naughty"
    assert ts.closed


@pytest.mark.parametrize("line, expected", [
    ("naughty reject_type temp", (450, False)),            # naughty's own type, when the marker named none
    ("naughty reject_type perm", (550, False)),
    ("naughty reject_type temp_disconnect", (421, True)),
])
def test_reject_type_of_naughty(session, line, expected):
    ts = session(["mark reject naughty", line, "rcpt_ok"])
    envelope(ts)
    reply = ts.command("RCPT TO:<u@example.com>")[-1]
    assert (reply.code, ts.closed) == expected


def test_the_marking_plugins_reject_type_wins(session):
    """`mark reject naughty reject_type temp`: the refusal is a 4xx though naughty's default is disconnect."""
    ts = session(["mark reject naughty reject_type temp", "naughty", "rcpt_ok"])
    envelope(ts)
    assert ts.command("RCPT TO:<u@example.com>")[-1].code == 450
    assert not ts.closed


def test_several_refusals_are_given_one_a_line(session):
    ts = session(["mark:0 reject naughty", "mark:1 reject naughty", "naughty reject mail"])
    [reply] = ts.command("EHLO client.test") and ts.command("MAIL FROM:<a@sender.test>")
    assert str(reply) == "550-5.7.1 (mark:0) MARKED as naughty\n550 5.7.1 (mark:1) MARKED as naughty"


def test_clean_connections_pass(session):
    ts = session(["naughty", "rcpt_ok", "queue/discard"])
    assert [r.code for r in ts.send_message("a@sender.test", ["u@example.com"], "Subject: x\n\nbody\n")] == [
        250, 250, 250, 250]


def test_reject_1_refuses_at_once_and_reject_0_not_at_all(session):
    ts = session(["mark reject 1", "naughty"])
    assert [r.code for r in ts.greeting] == [554] and ts.closed
    ts = session(["mark reject 0", "naughty", "rcpt_ok"])
    envelope(ts)
    assert ts.command("RCPT TO:<u@example.com>")[-1].code == 250


def test_relay_clients_and_whitelisted_hosts_are_not_refused(session):
    ts = session(["relay", "mark reject naughty", "naughty", "rcpt_ok"], remote_ip="192.0.2.9",
                 relayclients="192.0.2.9")
    envelope(ts)
    assert ts.command("RCPT TO:<u@example.com>")[-1].code == 250
    ts = session(["naughty", "rcpt_ok"])
    ts.connection.notes.update(naughty="(stray) refusal", whitelisthost=True)
    envelope(ts)
    assert ts.command("RCPT TO:<u@example.com>")[-1].code == 250


@pytest.mark.parametrize("arguments", ["reject helo", "reject 1", "reject_type later", "reject"])
def test_bad_arguments_stop_the_start_up(smtpd_factory, arguments):
    with pytest.raises(ConfigError):
        smtpd_factory(["naughty " + arguments])


def test_live_earlytalker_reject_naughty_is_refused_at_rcpt(live_server, tmp_path):
    """End to end over a socket: an early talker is greeted (earlytalker defers), then refused at RCPT."""
    server = live_server(plugins=["earlytalker wait 0.5 reject naughty", "naughty", "rcpt_ok",
                                  "queue/maildir %s" % (tmp_path / "Maildir")])
    client = RawClient(server.address)
    try:
        client.send(b"EHLO early.test\r\n")
        assert client.reply().code == 220
        assert client.reply().code == 250
        assert client.command("MAIL FROM:<a@sender.test>").code == 250
        reply = client.command("RCPT TO:<u@example.com>")
        assert str(reply) == "550 5.7.1 (earlytalker) Connecting host started transmitting before SMTP greeting"
        assert client.read_to_eof(5) == b""
    finally:
        client.close()
    # A polite client of the same server is served.
    with smtplib.SMTP(*server.address, timeout=10) as polite:
        assert polite.sendmail("a@sender.test", ["u@example.com"], "Subject: hi\r\n\r\nhello\r\n") == {}
    assert "naughty: disconnecting" in server.log


def test_live_reject_naughty_without_socket_tricks(live_server, tmp_path):
    """A `reject naughty` plugin of our own, over a real socket: refused at MAIL, the connection closed."""
    server = live_server(plugins=["mark reject naughty", "naughty reject mail", "rcpt_ok",
                                  "queue/maildir %s" % (tmp_path / "Maildir")],
                         plugin_files={"mark.py": MARK})
    client = smtplib.SMTP(*server.address, timeout=10)
    client.ehlo("client.test")
    code, text = client.mail("a@sender.test")
    assert (code, text) == (550, b"5.7.1 (mark) MARKED as naughty")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()
