"""earlytalker: clients that talk before the greeting (or before the 354) are refused or noted."""
import smtplib
import socket
import time

import pytest

from qpgevent import replies as R
from qpgevent.errors import ConfigError
from qpgevent.testing import TestSession, parse_replies

EARLY = "Connecting host started transmitting before SMTP greeting"
RCPTHOSTS = {"rcpthosts": ["example.com"]}


def read_replies(sock, count):
    """Read until ``count`` complete replies (or EOF) arrived on a raw socket."""
    data = b""
    while True:
        try:
            replies = parse_replies(data) if data.endswith(b"\r\n") else []
        except ValueError:
            replies = []
        if len(replies) >= count:
            return replies
        chunk = sock.recv(4096)
        if not chunk:
            return parse_replies(data)
        data += chunk


@pytest.fixture
def socket_pair():
    """(server side, client side) of a connected socket pair."""
    pair = socket.socketpair()
    yield pair
    for sock in pair:
        sock.close()


def session_on_socket(smtpd, server_side):
    """An in-memory session whose ``qp.socket`` is a real socket the plugin can watch."""
    ts = TestSession(smtpd, greet=False)
    ts.session.socket = server_side
    return ts


def plugins_with(tmp_path, line):
    return [line, "rcpt_ok", "queue/maildir %s" % (tmp_path / "Maildir")]


def test_live_early_talker_is_refused(live_server, tmp_path):
    """A client that sends EHLO before the banner gets the connect refusal (5.7.1), no 220, and is disconnected."""
    server = live_server(plugins=plugins_with(tmp_path, "earlytalker wait 1"))
    with socket.create_connection(server.address, timeout=5) as client:
        client.sendall(b"EHLO early.test\r\n")
        replies = read_replies(client, 1)
        assert len(replies) == 1
        assert (replies[0].code, replies[0].status) == (R.CONNECT_DENY.code, "5.7.1")
        assert EARLY in replies[0].text
        assert client.recv(100) == b""


def test_live_polite_client_is_greeted_after_the_wait(live_server, tmp_path):
    """A client that waits gets the 220 after about `wait` seconds and can send mail."""
    server = live_server(plugins=plugins_with(tmp_path, "earlytalker wait 1"))
    started = time.monotonic()
    with smtplib.SMTP(*server.address, timeout=10) as client:
        waited = time.monotonic() - started
        assert client.sendmail("a@sender.test", ["u@example.com"], "Subject: hi\r\n\r\nhello\r\n") == {}
    assert 0.9 <= waited < 4
    assert len(list((tmp_path / "Maildir" / "new").iterdir())) == 1


def test_live_reject_0_lets_the_early_talker_in_and_logs_it(live_server, tmp_path):
    """With reject 0 an early talker is greeted and served, and the log says it talked early."""
    server = live_server(plugins=plugins_with(tmp_path, "earlytalker wait 1 reject 0"))
    with socket.create_connection(server.address, timeout=5) as client:
        client.sendall(b"EHLO early.test\r\n")
        replies = read_replies(client, 2)
        assert [r.code for r in replies] == [220, 250]
    log = (server.config_dir.parent / ("server-%d.log" % server.port)).read_text()
    assert "earlytalker: fail, tolerated, 127.0.0.1 started talking before we said hello" in log


def test_live_waits_run_side_by_side(live_server, tmp_path):
    """Under gevent the wait holds up only its own session: three clients are all greeted after one wait."""
    server = live_server(plugins=plugins_with(tmp_path, "earlytalker wait 1"))
    started = time.monotonic()
    clients = [socket.create_connection(server.address, timeout=5) for _ in range(3)]
    try:
        assert [read_replies(client, 1)[0].code for client in clients] == [220, 220, 220]
    finally:
        for client in clients:
            client.close()
    assert time.monotonic() - started < 1.9


def test_without_a_socket_the_plugin_declines(session_factory):
    """In memory (no client socket) the greeting comes at once."""
    ts = session_factory(["earlytalker wait 20"])
    assert [r.code for r in ts.greeting] == [220]


def test_reject_type_temp_refuses_temporarily(smtpd_factory, socket_pair):
    """reject_type temp: an early talker gets the temporary connect refusal (4.7.1) and the session ends."""
    server_side, client_side = socket_pair
    ts = session_on_socket(smtpd_factory(["earlytalker wait 5 reject_type temp"]), server_side)
    client_side.sendall(b"EHLO early.test\r\n")
    ts.session.start()
    assert [str(r) for r in ts._take()] == ["%d 4.7.1 %s" % (R.CONNECT_DENYSOFT.code, EARLY)]
    assert ts.closed


def test_check_at_data_refuses_a_client_that_does_not_wait_for_354(smtpd_factory, socket_pair):
    """check-at DATA: a client that sends its message before the 354 gets 554 5.7.1; the transaction is reset."""
    server_side, client_side = socket_pair
    ts = session_on_socket(smtpd_factory(["earlytalker wait 5 check-at DATA", "rcpt_ok"], RCPTHOSTS), server_side)
    ts.session.start()
    assert [r.code for r in ts._take()] == [220]  # not checked at connect
    assert ts.command("EHLO client.test")[0].code == 250
    assert ts.command("MAIL FROM:<a@sender.test>")[0].code == 250
    assert ts.command("RCPT TO:<u@example.com>")[0].code == 250
    client_side.sendall(b"Subject: too soon\r\n")
    assert [str(r) for r in ts.command("DATA")] == ["554 5.7.1 Client started transmitting before the DATA go-ahead"]
    assert ts.transaction.sender is None
    assert ts.session.connection.notes["earlytalker"] is True


def test_check_at_data_lets_a_patient_client_send(smtpd_factory, socket_pair):
    """check-at DATA: a client that waits gets the 354 after the wait."""
    server_side, _ = socket_pair
    ts = session_on_socket(smtpd_factory(["earlytalker wait 0.2 check-at DATA", "rcpt_ok"], RCPTHOSTS), server_side)
    ts.session.start()
    ts._take()
    ts.command("EHLO client.test")
    ts.command("MAIL FROM:<a@sender.test>")
    ts.command("RCPT TO:<u@example.com>")
    started = time.monotonic()
    assert [r.code for r in ts.command("DATA")] == [354]
    assert time.monotonic() - started >= 0.19


def test_defer_reject_greets_then_refuses_mail(smtpd_factory, socket_pair):
    """defer-reject 1: the early talker is greeted, but every MAIL gets the rejection."""
    server_side, client_side = socket_pair
    ts = session_on_socket(smtpd_factory(["earlytalker wait 5 defer-reject 1", "rcpt_ok"]), server_side)
    client_side.sendall(b"EHLO early.test\r\n")
    ts.session.start()
    assert [r.code for r in ts._take()] == [220]
    assert ts.command("EHLO early.test")[0].code == 250
    assert [str(r) for r in ts.command("MAIL FROM:<a@sender.test>")] == ["550 5.7.1 " + EARLY]
    assert ts.connection.notes["karma"] == -1


def test_relay_clients_are_not_checked(smtpd_factory, socket_pair):
    """A relay client (relay listed first) is greeted even if it talks early."""
    server_side, client_side = socket_pair
    smtpd = smtpd_factory(["relay", "earlytalker wait 5"], config={"relayclients": ["127.0.0.1"]})
    ts = session_on_socket(smtpd, server_side)
    client_side.sendall(b"EHLO early.test\r\n")
    ts.session.start()
    assert [r.code for r in ts._take()] == [220]


@pytest.mark.parametrize("arguments", [
    "wait", "wait soon", "wait -1", "wait 30", "check-at HELO", "reject maybe", "reject_type later", "action maybe",
])
def test_bad_arguments_stop_the_start_up(smtpd_factory, arguments):
    """Odd, unknown or malformed arguments are a start-up error."""
    with pytest.raises(ConfigError):
        smtpd_factory(["earlytalker " + arguments])
