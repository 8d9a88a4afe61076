"""karma: per-IP history in the state store (sqlite and Redis), the penalty box, and the scores it gives."""
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qpgevent.errors import ConfigError
from qpgevent.state import TIMEOUT, open_store
from qpgevent.testing import RedisServer, TestSession, read_reply

ROOT = Path(__file__).resolve().parents[2]
# A test plugin: every connection scores the points its argument says (``score -3``), at connect.
SCORE = '''"""score: adjust every connection's karma at connect by the argument."""

def register(self, qp, points="0", *args):
    self.points = int(points)

def hook_connect(self, transaction):
    self.adjust_karma(self.points)
'''
IP = "192.0.2.10"
PENALTY = "You were naughty. You cannot connect for %s more days."


@pytest.fixture(params=["sqlite", "redis"])
def storage(request, tmp_path):
    """A storage URL of an empty store of each backend (Redis: a database of its own)."""
    if request.param == "sqlite":
        return "sqlite:%s" % (tmp_path / "state.db")
    url = request.getfixturevalue("redis_server").url[:-1] + "5"
    import redis
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def karma(smtpd_factory, tmp_path, storage):
    """``karma(plugins_line_args, points)`` -> a session factory ``connect(ip)`` on one daemon."""
    plugin_dir = tmp_path / "test-plugins"
    plugin_dir.mkdir(exist_ok=True)
    (plugin_dir / "score.py").write_text(SCORE)

    def make(line="karma reject 1", extra=(), config=None):
        smtpd = smtpd_factory([line, "score", *extra, "rcpt_ok", "queue/discard"],
                              {"plugin_dirs": str(plugin_dir), "rcpthosts": "example.com", "storage": storage,
                               **(config or {})})
        [score] = [p for p in smtpd.plugins if p.name == "score"]
        [plugin] = [p for p in smtpd.plugins if p.name == "karma"]

        def connect(points=0, ip=IP):
            score.points = points
            return TestSession(smtpd, remote_ip=ip)
        connect.plugin = plugin
        connect.store = open_store(storage)
        return connect
    return make


def visit(connect, points, ip=IP):
    """One whole connection scoring ``points``; returns its session."""
    ts = connect(points, ip)
    if not ts.closed:
        ts.command("QUIT")
    return ts


def test_a_naughty_connection_puts_a_new_client_in_the_penalty_box(karma):
    connect = karma()
    ts = visit(connect, -3)
    assert ts.greeting[0].code == 220
    penalty_start, naughty, nice, connects = connect.store.get("karma:" + IP).split(":")
    assert abs(int(penalty_start) - time.time()) < 5 and (naughty, nice, connects) == ("1", "0", "1")
    assert connect.store.ttl("karma:" + IP) > 300 * 86400
    ts = connect(0)
    assert [str(r) for r in ts.greeting] == ["554 5.7.1 " + PENALTY % "1.00"] and ts.closed
    assert ts.session.connection.notes["karma_history"] == -1
    assert connect(0, ip="192.0.2.11").greeting[0].code == 220  # another client is not concerned


def test_a_connection_reads_the_store_once_before_it_ends(karma):
    """pre-connection's read serves the connect hook too (the store is asked again only to record at the end)."""
    connect = karma()
    visit(connect, -3)
    reads = []
    store = connect.plugin.store
    original = store.get
    store.get = lambda key: reads.append(key) or original(key)
    try:
        ts = connect(0)
    finally:
        store.get = original
    assert ts.greeting[0].code == 554  # decided at connect from that one read: the client is in the penalty box
    assert reads == ["karma:" + IP]


def test_default_reject_naughty_leaves_the_refusal_to_the_naughty_plugin(karma):
    connect = karma("karma", extra=["naughty"])
    visit(connect, -3)
    ts = connect(0)
    assert ts.greeting[0].code == 220
    ts.command("EHLO client.test")
    ts.command("MAIL FROM:<a@sender.test>")
    assert [str(r) for r in ts.command("RCPT TO:<u@example.com>")] == ["550 5.7.1 (karma) " + PENALTY % "1.00"]
    assert ts.closed


def test_the_penalty_ends_after_penalty_days(karma):
    connect = karma("karma reject 1 penalty_days 0.5")
    visit(connect, -3)
    connect.plugin.clock = lambda: time.time() + 0.4 * 86400
    assert str(connect(0).greeting[0]) == "554 5.7.1 " + PENALTY % "0.10"
    connect.plugin.clock = lambda: time.time() + 0.5 * 86400 + 1
    assert connect(0).greeting[0].code == 220


def test_nice_connections_outweigh_a_naughty_one(karma):
    connect = karma()
    for _ in range(2):
        visit(connect, 3)
    assert connect.store.get("karma:" + IP) == "0:0:2:2"
    visit(connect, 1)  # neutral: counted, neither nice nor naughty
    visit(connect, -3)  # history 2 - 1 = 1: not below -negative
    assert connect.store.get("karma:" + IP) == "0:1:2:4"
    ts = connect(0)
    assert ts.greeting[0].code == 220 and ts.session.connection.notes["karma_history"] == 1


def test_negative_sets_how_far_naughty_must_outweigh_nice(karma):
    connect = karma("karma reject 1 negative 2")
    visit(connect, -3)
    assert connect(0).greeting[0].code == 220  # history -1: not yet -2
    visit(connect, -3)
    assert connect(0).greeting[0].code == 554


def test_strikes_sets_what_counts(karma):
    connect = karma("karma reject 1 strikes 5")
    visit(connect, -4)
    visit(connect, 4)
    assert connect.store.get("karma:" + IP) == "0:0:0:2"


def test_a_hopeless_history_earns_a_day_per_offence(karma):
    connect = karma()
    connect.store.set("karma:" + IP, "0:6:0:6", 600)
    visit(connect, -3)
    assert connect(0).greeting[0].text == "5.7.1 " + PENALTY % "8.00"  # 1 day + 7 naughty


def test_unknown_clients_get_one_recipient_per_message(karma):
    connect = karma()
    ts = connect(0)
    ts.command("EHLO client.test")
    ts.command("MAIL FROM:<a@sender.test>")
    assert ts.command("RCPT TO:<u@example.com>")[0].code == 250
    assert [str(r) for r in ts.command("RCPT TO:<v@example.com>")] == [
        "452 4.5.3 too many recipients for karma 0 (h: 0)"]
    # A client with a good history, or a connection that scored, may give many.
    for points, history in ((1, None), (0, 1)):
        if history:
            connect.store.set("karma:" + IP, "0:0:1:1", 600)
        ts = connect(points)
        replies = ts.send_message("a@sender.test", ["u@example.com", "v@example.com", "w@example.com"], "S: x\n\nx\n")
        assert [r.code for r in replies] == [250] * 6


def test_karma_tlds_and_a_space_in_the_envelope_score(karma):
    connect = karma(config={"karma_tlds": ["# comment", "work:-4", "fr:+1"]})
    ts = connect(0)
    ts.command("EHLO client.test")
    ts.command("MAIL FROM:<a@mail.example.work>")
    assert ts.session.connection.notes["karma"] == -4
    ts.command("RSET")
    ts.command("MAIL FROM:<a@example.fr>")
    assert ts.session.connection.notes["karma"] == -3
    ts.command("RSET")
    assert ts.command("MAIL FROM: <a@example.org>")[0].code == 250
    assert ts.session.connection.notes["karma"] == -5


def test_very_bad_karma_is_refused_at_data(karma):
    connect = karma()
    ts = connect(-5)
    replies = ts.send_message("a@sender.test", ["u@example.com"], "Subject: x\n\nbody\n")
    assert str(replies[-1]) == "554 5.7.1 very bad karma: -5"


def test_relay_clients_are_not_refused_or_recorded(smtpd_factory, storage):
    smtpd = smtpd_factory(["relay", "karma reject 1", "rcpt_ok"], {"relayclients": IP, "storage": storage})
    store = open_store(storage)
    store.set("karma:" + IP, "%d:1:0:1" % time.time(), 600)
    ts = TestSession(smtpd, remote_ip=IP)
    assert ts.greeting[0].code == 220
    ts.session.connection.notes["karma"] = -10
    ts.command("QUIT")
    assert store.get("karma:" + IP).endswith(":1:0:1")


def test_db_dir_wins_over_config_storage(smtpd_factory, tmp_path, storage):
    db_dir = tmp_path / "karma-db"
    db_dir.mkdir()
    smtpd = smtpd_factory(["karma reject 1 db_dir %s" % db_dir], {"storage": storage})
    ts = TestSession(smtpd, remote_ip=IP)
    ts.session.connection.notes["karma"] = -3
    ts.command("QUIT")
    assert open_store("sqlite:%s" % (db_dir / "karma.db")).get("karma:" + IP).endswith(":1:0:1")
    assert open_store(storage).get("karma:" + IP) is None
    with pytest.raises(ConfigError, match="db_dir .*no-such-dir does not exist"):
        smtpd_factory(["karma db_dir %s" % (tmp_path / "no-such-dir")])


@pytest.mark.parametrize("arguments", ["negative 0", "strikes x", "penalty_days -1", "reject maybe", "db_dri /tmp"])
def test_bad_arguments_stop_the_start_up(smtpd_factory, arguments):
    with pytest.raises(ConfigError):
        smtpd_factory(["karma " + arguments])


def test_qpsmtpd_sample_line_is_accepted(smtpd_factory):
    smtpd_factory(["karma penalty_box 1 reject naughty", "naughty"])


def test_store_down_lets_clients_through_with_a_log_line(smtpd_factory, tmp_path):
    server = RedisServer(tmp_path / "redis-stopped").start()
    server.stop()
    smtpd = smtpd_factory(["karma reject 1", "rcpt_ok"], {"storage": server.url, "rcpthosts": "example.com"})
    ts = TestSession(smtpd, remote_ip=IP, greet=False)
    logged = ts.capture_log()
    started = time.monotonic()
    ts.start()
    assert ts.greeting[0].code == 220
    ts.session.connection.notes["karma"] = -3
    ts.command("QUIT")
    assert time.monotonic() - started < 3 * (TIMEOUT + 0.5)  # pre-connection, connect, disconnect: each bounded
    messages = [m for _, _, plugin, m in logged if plugin == "karma"]
    assert any(m.startswith("skip, karma not checked: state store redis://") for m in messages)


def test_qpsmtpd_state_lists_and_clears_karma(karma, tmp_path, storage):
    connect = karma()
    visit(connect, -3)
    config = tmp_path / "config"  # the daemon's config dir: its storage file names this store

    def tool(*args):
        return subprocess.run([sys.executable, str(ROOT / "bin" / "qpsmtpd-state"), "--config-dir", str(config), *args],
                              capture_output=True, text=True, timeout=60)
    listed = tool("list", "karma:")
    assert listed.returncode == 0
    assert re.fullmatch(r"karma:192\.0\.2\.10\t\d+:1:0:1\t\d+s\n", listed.stdout)
    assert connect(0).greeting[0].code == 554
    assert tool("clear", "karma:" + IP).returncode == 0  # forgiven
    assert connect(0).greeting[0].code == 220


def test_live_penalty_box_over_real_sockets(live_server, tmp_path):
    """An early talker from 127.0.0.5 is a naughty connection (strikes 1); its next connection is refused."""
    server = live_server(plugins=["karma strikes 1 reject 1", "earlytalker wait 0.3 reject 0", "rcpt_ok",
                                  "queue/maildir %s" % (tmp_path / "Maildir")])

    def connect(source):
        return socket.create_connection(server.address, timeout=10, source_address=(source, 0))
    with connect("127.0.0.5") as early:
        early.sendall(b"EHLO early.test\r\n")
        assert read_reply(early).code == 220
        early.sendall(b"QUIT\r\n")
        while early.recv(4096):
            pass
    assert "karma: negative, sent to penalty box" in server.log
    with connect("127.0.0.5") as again:
        reply = read_reply(again)
        assert str(reply) == "554 5.7.1 " + PENALTY % "1.00"
        assert again.recv(100) == b""
    with connect("127.0.0.6") as other:  # (not 127.0.0.1: the server's start-up probe talked early)
        assert read_reply(other).code == 220
