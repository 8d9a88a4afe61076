"""logging/syslog: RFC 3164 datagrams to a real socket, with a stderr fallback that never breaks a session."""
import os
import re
import socket
import threading
import time

import pytest

from qpgevent.errors import ConfigError

CONFIG = {"rcpthosts": ["example.com"]}
RCPT_LINE = "(rcpt) rcpt_ok: pass, example.com is in rcpthosts"
STAMP = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ 1-3]\d \d\d:\d\d:\d\d"


class Receiver:
    """A syslog daemon stand-in: a datagram socket read by a thread, so its queue never fills."""

    def __init__(self, family, address):
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.address = self.sock.getsockname()
        self.datagrams = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if data == b"STOP":
                return
            self.datagrams.append(data.decode("utf-8"))

    def stop(self):
        """Wait until everything sent so far has been read, then close."""
        with socket.socket(self.sock.family, socket.SOCK_DGRAM) as poke:
            poke.sendto(b"STOP", self.address)
        self.thread.join(5)
        self.sock.close()
        return self.datagrams

    def matching(self, pattern):
        return [d for d in self.datagrams if re.search(pattern, d)]


@pytest.fixture
def receivers():
    made = []

    def make(family=socket.AF_UNIX, address=None):
        receiver = Receiver(family, address)
        made.append(receiver)
        return receiver
    yield make
    for receiver in made:
        if receiver.sock.fileno() != -1:
            receiver.stop()


@pytest.fixture
def unix_receiver(receivers, tmp_path):
    return receivers(socket.AF_UNIX, str(tmp_path / "log.sock"))


def run_session(session):
    replies = session.send_message("a@sender.test", ["u@example.com"], "Subject: x\n\nhi\n")
    assert replies[-1].code == 250, replies[-1]
    return replies


def test_datagram_has_priority_timestamp_ident_pid_and_connection_id(session_factory, unix_receiver):
    """A LOGINFO line goes out as ``<22>Mmm dd hh:mm:ss qpsmtpd[pid]: <connection id> (hook) plugin: msg``:
    facility mail (2) and severity info (6)."""
    session = session_factory(plugins=["logging/syslog loglevel LOGINFO socket %s" % unix_receiver.address,
                                       "rcpt_ok", "queue/discard"], config=CONFIG)
    run_session(session)
    unix_receiver.stop()
    expected = r"^<22>%s qpsmtpd\[%d\]: %s %s$" % (STAMP, os.getpid(), re.escape(session.connection.id),
                                                  re.escape(RCPT_LINE))
    assert len(unix_receiver.matching(expected)) == 1, unix_receiver.datagrams


def test_severity_follows_the_level(session_factory, unix_receiver):
    """LOGWARN maps to warning (``<20>`` with facility mail), LOGINFO to info (``<22>``); a line
    from outside any session carries no connection id."""
    session = session_factory(plugins=["logging/syslog loglevel 6 socket %s" % unix_receiver.address,
                                       "rcpt_ok", "queue/discard"], config=CONFIG)
    run_session(session)
    unix_receiver.stop()
    assert unix_receiver.matching(r"^<20>%s qpsmtpd\[\d+\]: queue/discard: every accepted message" % STAMP)
    assert unix_receiver.matching(r"^<22>.*: %s 250 2.0.0 Queued \(discarded\)$" % re.escape(session.connection.id))


@pytest.mark.parametrize("args, pri", [
    ("facility local3", 19 * 8 + 6),
    ("facility LOG_DAEMON", 3 * 8 + 6),
    ("priority LOG_NOTICE", 2 * 8 + 5),
    ("facility local0 priority err", 16 * 8 + 3),
    ("facility 1 priority 2", 1 * 8 + 2),
])
def test_facility_and_fixed_priority(session_factory, unix_receiver, args, pri):
    """``facility`` and ``priority`` set the <PRI> value (facility * 8 + severity)."""
    session = session_factory(plugins=["logging/syslog loglevel 6 %s socket %s" % (args, unix_receiver.address),
                                       "rcpt_ok", "queue/discard"], config=CONFIG)
    run_session(session)
    unix_receiver.stop()
    assert unix_receiver.matching(r"^<%d>%s qpsmtpd\[\d+\]: \S+ %s$" % (pri, STAMP, re.escape(RCPT_LINE)))


def test_ident(session_factory, unix_receiver):
    """``ident`` replaces the ``qpsmtpd`` tag."""
    session = session_factory(plugins=["logging/syslog loglevel 6 ident mx-in.1 socket %s" % unix_receiver.address,
                                       "rcpt_ok", "queue/discard"], config=CONFIG)
    run_session(session)
    unix_receiver.stop()
    assert unix_receiver.matching(r"^<22>%s mx-in\.1\[%d\]: " % (STAMP, os.getpid()))
    assert not unix_receiver.matching(r"qpsmtpd\[")


def test_levels_above_the_threshold_are_dropped(session_factory, unix_receiver):
    """With the default level (LOGWARN) no LOGINFO or LOGDEBUG line is sent, and the core
    knows the threshold."""
    session = session_factory(plugins=["logging/syslog socket %s" % unix_receiver.address, "rcpt_ok", "queue/discard"],
                              config=CONFIG)
    run_session(session)
    datagrams = unix_receiver.stop()
    assert session.smtpd.log_threshold == 4
    assert datagrams and all(re.match(r"<(1[6-9]|20)>", d) for d in datagrams), datagrams


def test_udp_datagrams_include_the_host_name(session_factory, receivers):
    """``logsock udp socket HOST:PORT`` sends UDP datagrams, with the host name after the timestamp."""
    receiver = receivers(socket.AF_INET, ("127.0.0.1", 0))
    session = session_factory(plugins=["logging/syslog loglevel 6 logsock udp socket 127.0.0.1:%d" % receiver.address[1],
                                       "rcpt_ok", "queue/discard"], config=CONFIG)
    run_session(session)
    receiver.stop()
    host = re.escape(socket.gethostname().split(".")[0])
    assert receiver.matching(r"^<22>%s %s qpsmtpd\[\d+\]: \S+ %s$" % (STAMP, host, re.escape(RCPT_LINE)))


def test_missing_socket_at_start_up_falls_back_to_stderr(session_factory, tmp_path, capsys):
    """No socket at start-up: the server starts, says so once on stderr, writes the lines there,
    and the client gets its 250s."""
    path = tmp_path / "no.sock"
    session = session_factory(plugins=["logging/syslog loglevel 6 socket %s" % path, "rcpt_ok", "queue/discard"],
                              config=CONFIG)
    replies = run_session(session)
    assert replies[-1].text == "2.0.0 Queued (discarded)"
    err = capsys.readouterr().err
    assert err.count("%s does not exist" % path) == 1
    assert "%d %s LOGINFO %s\n" % (os.getpid(), session.connection.id, RCPT_LINE) in err


@pytest.mark.skipif(os.path.exists("/dev/log"), reason="this host has a syslog socket")
def test_default_socket_is_dev_log(session_factory, capsys):
    """Without ``socket`` the plugin uses /dev/log; where it is absent it does not crash."""
    session = session_factory(plugins=["logging/syslog", "rcpt_ok", "queue/discard"], config=CONFIG)
    run_session(session)
    assert capsys.readouterr().err.count("/dev/log does not exist") == 1


def test_syslog_appearing_later_is_used(session_factory, tmp_path, receivers, capsys):
    """Once the daemon's socket exists, the lines go there again, with one notice on stderr."""
    path = tmp_path / "log.sock"
    session = session_factory(plugins=["logging/syslog loglevel 6 socket %s" % path, "rcpt_ok", "queue/discard"],
                              config=CONFIG)
    session.command("EHLO client.test")
    receiver = receivers(socket.AF_UNIX, str(path))
    run_session(session)
    receiver.stop()
    assert receiver.matching(re.escape(RCPT_LINE))
    assert "sending to syslog at %s again" % path in capsys.readouterr().err


def test_daemon_going_away_never_breaks_the_session(session_factory, unix_receiver, capsys):
    """The socket disappears mid-session: the client still gets every 250; the lines go to stderr."""
    session = session_factory(plugins=["logging/syslog loglevel 7 socket %s" % unix_receiver.address,
                                       "rcpt_ok", "queue/discard"], config=CONFIG)
    session.command("EHLO client.test")
    unix_receiver.stop()
    os.unlink(unix_receiver.address)
    replies = run_session(session)
    assert [r.code for r in replies] == [250, 250, 250]  # MAIL, RCPT, end of DATA
    err = capsys.readouterr().err
    assert err.count("cannot send to syslog") == 1 and RCPT_LINE in err


def test_hung_daemon_costs_at_most_a_second(session_factory, tmp_path, capsys):
    """A daemon that never reads (its queue full) delays one line by the one-second send
    timeout; after that lines go straight to stderr and the session runs at full speed."""
    path = str(tmp_path / "hung.sock")
    hung = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    hung.bind(path)
    try:
        session = session_factory(plugins=["logging/syslog loglevel 7 socket %s" % path, "rcpt_ok", "queue/discard"],
                                  config=CONFIG)
        started = time.monotonic()
        for _ in range(3):
            run_session(session)
        assert time.monotonic() - started < 3
    finally:
        hung.close()
    assert capsys.readouterr().err.count("cannot send to syslog") == 1


@pytest.mark.parametrize("args, complaint", [
    ("loglevel", "in pairs"),
    ("colour blue", "unknown argument"),
    ("loglevel 9", "not a log level"),
    ("facility mailbox", "facility 'mailbox' is unknown"),
    ("priority loud", "priority 'loud' is unknown"),
    ("ident bad/name", "ident"),
    ("logsock tcp", "not supported"),
    ("logsock udp socket host:port", "HOST:PORT"),
])
def test_bad_arguments_stop_start_up(smtpd_factory, args, complaint):
    """Odd or unknown arguments, bad levels, facilities, priorities, idents and socket types
    refuse to start, saying what is allowed."""
    with pytest.raises(ConfigError, match=complaint):
        smtpd_factory(plugins=["logging/syslog %s" % args, "rcpt_ok"])
