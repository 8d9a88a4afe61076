"""greylisting: RFC 6647 triplets in the state store (sqlite and Redis), with qpsmtpd's arguments."""
import smtplib
import time

import pytest

from qpgevent import DECLINED, OK
from qpgevent.errors import ConfigError
from qpgevent.state import TIMEOUT, open_store
from qpgevent.testing import LiveServer, RedisServer, TestSession, write_config

IP = "192.0.2.20"
DEFERRED_MAIL = "450 4.7.1 This mail is temporarily denied"
DEFERRED_RCPT = DEFERRED_MAIL
DEFERRED_DATA = "451 4.7.1 This mail is temporarily denied"
BLACK = 3000


@pytest.fixture(params=["sqlite", "redis"])
def storage(request, tmp_path):
    """A storage URL of an empty store of each backend (Redis: a database of its own)."""
    if request.param == "sqlite":
        return "sqlite:%s" % (tmp_path / "state.db")
    url = request.getfixturevalue("redis_server").url[:-1] + "6"
    import redis
    redis.Redis.from_url(url).flushdb()
    return url


class Clock:
    """The time the plugin sees: starts now, moved by the test."""

    def __init__(self):
        self.now = time.time()

    def __call__(self):
        return self.now


@pytest.fixture
def grey(smtpd_factory, storage):
    """``grey(line, config)`` -> ``connect(ip)`` giving greeted sessions on one daemon; ``connect.clock`` moves time."""
    def make(line="greylisting", config=None, before=()):
        smtpd = smtpd_factory([*before, line, "rcpt_ok", "queue/discard"],
                              {"rcpthosts": "example.com", "storage": storage, **(config or {})})
        [plugin] = [p for p in smtpd.plugins if p.name == "greylisting"]
        plugin.clock = Clock()

        def connect(ip=IP, **kwargs):
            return TestSession(smtpd, remote_ip=ip, **kwargs)
        connect.clock, connect.plugin, connect.store = plugin.clock, plugin, open_store(storage)
        return connect
    return make


def mail(ts, sender="a@sender.test"):
    ts.command("EHLO client.test")
    return str(ts.command("MAIL FROM:<%s>" % sender)[0])


def test_a_triplet_is_deferred_until_black_timeout_then_white(grey):
    connect = grey()
    assert mail(connect()) == DEFERRED_MAIL
    connect.clock.now += BLACK - 10
    assert mail(connect()) == DEFERRED_MAIL  # a retry too soon: still deferred
    first, _, deferrals, deliveries = connect.store.get("greylisting:" + IP).split(":")
    assert (deferrals, deliveries) == ("1", "0") and abs(int(first) - time.time()) < 5
    connect.clock.now += 20
    ts = connect()
    assert mail(ts).startswith("250 ")
    assert [r.code for r in ts.command("RCPT TO:<u@example.com>") + ts.data("Subject: x\n\nbody\n")] == [250, 250]
    # White now: another message a month later passes at once, and renews the triplet.
    connect.clock.now += 30 * 86400
    assert mail(connect()).startswith("250 ")
    assert connect.store.get("greylisting:" + IP).endswith(":1:2")
    assert 30 * 86400 < connect.store.ttl("greylisting:" + IP) <= 36 * 86400
    # 36 days without a delivery: unknown again.
    connect.clock.now += 36 * 86400
    assert mail(connect()) == DEFERRED_MAIL


def test_the_triplet_is_the_ip_alone_by_default(grey):
    connect = grey()
    assert mail(connect()) == DEFERRED_MAIL
    assert mail(connect(), sender="b@other.test") == DEFERRED_MAIL
    assert mail(connect(ip="192.0.2.21")) == DEFERRED_MAIL
    connect.clock.now += BLACK
    assert mail(connect(), sender="c@third.test").startswith("250 ")
    assert sorted(k for k, _ in connect.store.scan("greylisting:")) == ["greylisting:192.0.2.20",
                                                                         "greylisting:192.0.2.21"]


def test_sender_and_recipient_in_the_triplet_check_at_rcpt(grey):
    connect = grey("greylisting sender 1 recipient 1")
    ts = connect()
    assert mail(ts).startswith("250 ")
    assert str(ts.command("RCPT TO:<u@example.com>")[0]) == DEFERRED_RCPT
    connect.clock.now += BLACK
    assert ts.command("RCPT TO:<u@example.com>")[0].code == 250
    assert str(ts.command("RCPT TO:<v@example.com>")[0]) == DEFERRED_RCPT  # another triplet
    assert connect.store.get("greylisting:%s:a@sender.test:u@example.com" % IP).endswith(":1")


def test_a_null_sender_is_deferred_at_data_not_rcpt(grey):
    connect = grey("greylisting recipient 1")
    ts = connect()
    assert mail(ts, sender="").startswith("250 ")
    assert ts.command("RCPT TO:<u@example.com>")[0].code == 250
    assert [str(r) for r in ts.command("DATA")] == [DEFERRED_DATA]


def test_deny_late_defers_at_data(grey):
    connect = grey("greylisting deny_late 1")
    ts = connect()
    assert mail(ts).startswith("250 ")
    assert ts.command("RCPT TO:<u@example.com>")[0].code == 250
    assert [str(r) for r in ts.command("DATA")] == [DEFERRED_DATA]


def test_reject_0_records_but_defers_nothing(grey):
    for line in ("greylisting reject 0", "greylisting mode testonly"):
        connect = grey(line)
        assert mail(connect(ip="192.0.2.30")).startswith("250 ")
        assert connect.store.get("greylisting:192.0.2.30") is not None


def test_denysoft_greylist_file_sets_defaults_the_line_overrides(grey):
    connect = grey("greylisting", config={"denysoft_greylist": ["black_timeout 10", "reject 0"]})
    assert (connect.plugin.options.black_timeout, connect.plugin.options.reject) == (10, "0")
    connect = grey("greylisting reject 1", config={"denysoft_greylist": ["black_timeout 10", "reject 0"]})
    assert mail(connect()) == DEFERRED_MAIL
    connect.clock.now += 11
    assert mail(connect()).startswith("250 ")


def test_per_recipient_settings_come_from_user_config(grey):
    def no_delays_for_vip(self, transaction, address, name):
        if name == "denysoft_greylist" and address.user == "vip":
            return OK, "reject 0"
        return DECLINED
    connect = grey("greylisting per_recipient 1")
    ts = connect()
    ts.mock_hook("user_config", no_delays_for_vip)
    mail(ts)
    assert ts.command("RCPT TO:<vip@example.com>")[0].code == 250
    assert str(ts.command("RCPT TO:<u@example.com>")[0]) == DEFERRED_RCPT


def test_clients_left_alone(grey, tmp_path):
    """Relay clients, good karma, geoip countries, p0f misses and excluded hosts are not greylisted."""
    connect = grey("greylisting", before=["relay"], config={"relayclients": IP})
    assert mail(connect()).startswith("250 ")
    connect = grey()
    ts = connect(ip="192.0.2.40")
    ts.session.connection.notes["karma_history"] = 6
    assert mail(ts).startswith("250 ")
    ts = connect(ip="192.0.2.41")
    ts.session.connection.notes["karma_history"] = 5
    assert mail(ts) == DEFERRED_MAIL
    connect = grey("greylisting geoip US,ca")
    ts = connect(ip="192.0.2.42")
    ts.session.connection.notes["geoip_country"] = "CA"
    assert mail(ts).startswith("250 ")
    ts = connect(ip="192.0.2.43")
    ts.session.connection.notes["geoip_country"] = "XX"
    assert mail(ts) == DEFERRED_MAIL
    connect = grey("greylisting p0f genre,windows,distance,10")
    for ip, p0f, expected in (("192.0.2.44", {"genre": "Linux", "distance": 3}, "250"),
                              ("192.0.2.45", {"genre": "Windows", "distance": 3}, "450"),
                              ("192.0.2.46", {"genre": "Linux", "distance": 12}, "450"),
                              ("192.0.2.47", None, "250")):
        ts = connect(ip=ip)
        ts.session.connection.notes["p0f"] = p0f
        assert mail(ts)[:3] == expected, ip


def test_greylist_exclude_files(grey, tmp_path):
    (tmp_path / "exclude").write_text("# known senders\n192.0.2.50\npostini.com\n/^mta[12]\\.siol\\.net$/\n")
    connect = grey(config={"greylist_exclude_files": str(tmp_path / "exclude")})
    assert mail(connect(ip="192.0.2.50")).startswith("250 ")
    assert mail(connect(ip="192.0.2.51", remote_host="postini.com")).startswith("250 ")
    assert mail(connect(ip="192.0.2.52", remote_host="mta2.siol.net")).startswith("250 ")
    assert mail(connect(ip="192.0.2.53", remote_host="mta3.siol.net")) == DEFERRED_MAIL


def test_db_dir_and_redis_arguments_win_over_config_storage(smtpd_factory, tmp_path, redis_server):
    db_dir = tmp_path / "grey-db"
    db_dir.mkdir()
    elsewhere = "sqlite:%s" % (tmp_path / "state.db")
    smtpd = smtpd_factory(["greylisting db_dir %s" % db_dir, "rcpt_ok"], {"storage": elsewhere})
    mail(TestSession(smtpd, remote_ip=IP))
    assert open_store("sqlite:%s" % (db_dir / "greylisting.db")).get("greylisting:" + IP)
    assert open_store(elsewhere).get("greylisting:" + IP) is None
    host_port = redis_server.url[len("redis://"):-2]
    smtpd = smtpd_factory(["greylisting redis %s db_dir %s" % (host_port, db_dir), "rcpt_ok"], {"storage": elsewhere})
    mail(TestSession(smtpd, remote_ip="192.0.2.60"))
    assert open_store(redis_server.url).get("greylisting:192.0.2.60")


@pytest.mark.parametrize("arguments", ["remote_ip 0", "black_timeout soon", "reject naughty", "p0f genre",
                                       "redis a:b", "db_dir /no/such/dir", "white_timeout 0", "remote_ipp 1"])
def test_bad_arguments_stop_the_start_up(smtpd_factory, arguments):
    with pytest.raises(ConfigError):
        smtpd_factory(["greylisting " + arguments])


def test_legacy_arguments_are_accepted(smtpd_factory):
    smtpd_factory(["greylisting grey_timeout 12000 nfslock 1 upgrade 1 mode denysoft"])


def test_store_down_fails_open_with_a_log_line(smtpd_factory, tmp_path):
    server = RedisServer(tmp_path / "redis-stopped").start()
    server.stop()
    smtpd = smtpd_factory(["greylisting", "rcpt_ok"], {"storage": server.url})
    ts = TestSession(smtpd, remote_ip=IP)
    logged = ts.capture_log()
    started = time.monotonic()
    assert mail(ts).startswith("250 ")
    assert time.monotonic() - started < TIMEOUT + 1
    assert any(plugin == "greylisting" and m.startswith("UNABLE TO OBTAIN GREYLIST RESULT: state store redis://")
               for _, _, plugin, m in logged)


@pytest.mark.parametrize("shared", ["sqlite", "redis"])
def test_two_servers_sharing_the_store_see_the_same_triplet(tmp_path, request, shared):
    """Deferred by one server process, a client retrying at another (after black_timeout) gets through."""
    if shared == "sqlite":
        url = "sqlite:%s" % (tmp_path / "shared.db")
    else:
        url = request.getfixturevalue("redis_server").url[:-1] + "7"
        import redis
        redis.Redis.from_url(url).flushdb()
    servers = []
    for name in ("mx1", "mx2"):
        config = write_config(tmp_path / name / "config", {
            "me": "%s.test" % name, "rcpthosts": "example.com", "storage": url, "loglevel": "6",
            "spool_dir": str(tmp_path / name / "spool"),
            "plugins": ["greylisting black_timeout 60", "rcpt_ok", "queue/maildir %s" % (tmp_path / name / "Maildir")]})
        servers.append(LiveServer(config, cwd=tmp_path / name).start())
    try:
        def send(server):
            with smtplib.SMTP(*server.address, timeout=10, source_address=("127.0.0.8", 0)) as client:
                return client.sendmail("a@sender.test", ["u@example.com"], "Subject: hi\r\n\r\nhello\r\n")
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            send(servers[0])
        assert (refused.value.smtp_code, refused.value.smtp_error) == (450, b"4.7.1 This mail is temporarily denied")
        with pytest.raises(smtplib.SMTPSenderRefused):
            send(servers[1])  # mx2 knows the triplet too: a retry too soon
        store = open_store(url)
        first, new, black, white = store.get("greylisting:127.0.0.8").split(":")
        assert (black, white) == ("1", "0")
        # An hour passes (written into the shared record rather than waited for).
        store.set("greylisting:127.0.0.8", "%d:%s:%s:%s" % (int(first) - 3600, new, black, white), 600)
        assert send(servers[1]) == {}
        assert send(servers[0]) == {}  # white on mx1 too
        assert store.get("greylisting:127.0.0.8").endswith(":1:2")
        assert [len(list((tmp_path / name / "Maildir" / "new").iterdir())) for name in ("mx1", "mx2")] == [1, 1]
    finally:
        for server in servers:
            server.stop()
