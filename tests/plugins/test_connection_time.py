"""connection_time: one line per connection with its duration, at the level the arguments say."""
import re
import smtplib
import time

import pytest

from qpgevent import LOGDEBUG, LOGINFO, LOGNOTICE, LOGWARN
from qpgevent.errors import ConfigError
from qpgevent.testing import TestSession

DURATION = re.compile(r"(\d+\.\d{3}) s\.\Z")


def started(smtpd, logged=None):
    """A session on ``smtpd`` whose log is captured from its first hook on (into ``logged``, when given)."""
    session = TestSession(smtpd, greet=False)
    if logged is None:
        session.capture_log()
    else:
        session.logged = logged
    session.start()
    return session


def durations(session):
    """(level, seconds) of each duration line the session logged."""
    return [(level, float(DURATION.search(message).group(1))) for level, hook, plugin, message in session.logged
            if plugin.startswith("connection_time") and hook == "post-connection"]


def test_duration_is_logged_at_loginfo_when_the_session_ends(smtpd_factory):
    session = started(smtpd_factory(["connection_time", "rcpt_ok"]))
    time.sleep(0.2)
    assert session.command("QUIT")[0].code == 221
    [(level, seconds)] = durations(session)
    assert level == LOGINFO and 0.2 <= seconds < 1.5


def test_each_connection_has_its_own_clock(smtpd_factory):
    """Two overlapping sessions: the later one does not reset the earlier one's start (qpsmtpd kept one per process)."""
    smtpd = smtpd_factory(["connection_time", "rcpt_ok"])
    first = started(smtpd)
    time.sleep(0.3)
    second = started(smtpd, first.logged)  # one capture for both: its lines come in the order the sessions end
    first.command("QUIT")
    second.command("QUIT")
    [(_, first_seconds), (_, second_seconds)] = durations(first)
    assert first_seconds >= 0.3 and second_seconds < 0.25


@pytest.mark.parametrize("line, level", [
    ("connection_time 4", LOGWARN),
    ("connection_time LOGNOTICE", LOGNOTICE),
    ("connection_time loglevel 4", LOGWARN),
    ("connection_time loglevel +1", LOGDEBUG),
    ("connection_time -1", LOGNOTICE),
])
def test_level_as_a_bare_word_or_a_pair(smtpd_factory, line, level):
    """qpsmtpd's forms: a bare LEVEL (number or name) or ``loglevel LEVEL``, absolute or +N/-N."""
    session = started(smtpd_factory([line, "rcpt_ok"]))
    session.command("QUIT")
    assert [lvl for lvl, _ in durations(session)] == [level]


def test_client_hanging_up_still_logs(smtpd_factory):
    session = started(smtpd_factory(["connection_time", "rcpt_ok"]))
    session.command("EHLO client.test")
    session.eof()
    assert len(durations(session)) == 1


@pytest.mark.parametrize("line, complaint", [
    ("connection_time LOGNOISE", "loglevel takes a log level.*, not 'LOGNOISE'"),
    ("connection_time 9", "loglevel takes a log level.*, not '9'"),
    ("connection_time loglevel 9", "'9' is not a log level"),
    ("connection_time 4 5", "'5' has no value"),
    ("connection_time verbose", "loglevel takes a log level: 0-7, a name such as LOGINFO, or \\+N/-N, not 'verbose'"),
    ("connection_time wait 1", "not 'wait'; .* '1' has no value"),
])
def test_bad_arguments_stop_start_up(smtpd_factory, line, complaint):
    with pytest.raises(ConfigError, match=complaint):
        smtpd_factory([line, "rcpt_ok"])


def test_live_server_logs_the_duration(live_server, tmp_path):
    """Over a real socket: a session held open 0.3 s is logged as lasting at least that long."""
    server = live_server(plugins=["connection_time", "rcpt_ok", "queue/maildir %s" % (tmp_path / "Maildir")])
    with smtplib.SMTP(*server.address, timeout=10) as client:
        client.ehlo("client.test")
        time.sleep(0.3)
    log_file = tmp_path / ("server-%d.log" % server.port)
    deadline = time.monotonic() + 5
    while "connection_time: " not in log_file.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    # the last line: the server's readiness probe was the first connection
    found = re.findall(r"\(post-connection\) connection_time: (\d+\.\d{3}) s\.", log_file.read_text())
    assert found and 0.3 <= float(found[-1]) < 5
