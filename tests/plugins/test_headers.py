"""headers: required headers, singular headers, the Date window, reject and reject_type."""
import smtplib
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone

import pytest

from qpgevent.errors import ConfigError

CONFIG = {"rcpthosts": ["example.com"]}


def send(session_factory, line, message, **kwargs):
    """The reply to ``message`` from a client on 192.0.2.7 through ``line``, as text."""
    session = session_factory([line, "rcpt_ok", "queue/discard"], CONFIG, remote_ip="192.0.2.7", **kwargs)
    return str(session.send_message("a@sender.test", ["u@example.com"], message)[-1])


def dated(days):
    """A Date header value ``days`` from now (negative: in the past)."""
    return format_datetime(datetime.now(timezone.utc) + timedelta(days=days))


GOOD = "From: a@sender.test\nDate: %s\nSubject: hi\n\nhello\n"


def test_default_requires_from_only(session_factory):
    """Without ``require`` a From is needed (552 5.6.0) and a missing Date is fine."""
    assert send(session_factory, "headers", "Subject: hi\n\nhello\n") == "552 5.6.0 We require a valid From header"
    assert send(session_factory, "headers", "From: a@sender.test\n\nhello\n").startswith("250 ")


def test_empty_from_counts_as_missing(session_factory):
    assert send(session_factory, "headers", "From:   \nSubject: hi\n\nhello\n") == \
        "552 5.6.0 We require a valid From header"


@pytest.mark.parametrize("message, reply", [
    ("From: a@sender.test\n\nhello\n", "552 5.6.0 We require a valid Date header"),
    ("Date: %s\n\nhello\n" % dated(0), "552 5.6.0 We require a valid From header"),
    ("From: a@sender.test\nDate: %s\nMessage-ID: <1@x>\n\nhello\n" % dated(0), "552 5.6.0 We require a valid Subject header"),
    ("From: a@sender.test\nDate: %s\nSubject: x\n\nhello\n" % dated(0), "552 5.6.0 We require a valid message-id header"),
    ("From: a@sender.test\nDate: %s\nSubject: x\nMessage-ID: <1@x>\n\nhello\n" % dated(0), "250 2.0.0 Queued (discarded)"),
])
def test_require_lists_the_headers(session_factory, message, reply):
    """``require From,Date,Subject,Message-ID``: each one must be there; the header name matches in any case."""
    assert send(session_factory, "headers require From,Date,Subject,message-id", message).startswith(reply)


@pytest.mark.parametrize("name", ["Date", "From", "Sender", "Reply-To", "To", "Cc", "Bcc", "Message-Id",
                                  "In-Reply-To", "References", "Subject"])
def test_singular_headers_may_not_repeat(session_factory, name):
    """Each field RFC 5322 3.6 allows once is refused when it comes twice (in any case)."""
    message = "From: a@sender.test\nDate: %s\n%s: one\n%s: two\n\nhello\n" % (dated(0), name, name.lower())
    if name in ("From", "Date"):
        message = "From: a@sender.test\nDate: %s\n%s: two\n\nhello\n" % (dated(0), name.upper())
    assert send(session_factory, "headers", message) == \
        "552 5.6.0 Only one %s header allowed. See RFC 5322, Section 3.6" % name


def test_repeatable_headers_may_repeat(session_factory):
    message = "From: a@sender.test\nReceived: one\nReceived: two\nComments: a\nComments: b\n\nhello\n"
    assert send(session_factory, "headers", message).startswith("250 ")


@pytest.mark.parametrize("days, reply", [
    (-16, "552 5.6.0 The Date header is too far in the past"),
    (-14, "250 2.0.0 Queued"),
    (1.5, "250 2.0.0 Queued"),
    (3, "552 5.6.0 The Date header is too far in the future"),
])
def test_date_window(session_factory, days, reply):
    """``future 2 past 15``: a Date more than 15 days old or 2 days ahead is refused."""
    assert send(session_factory, "headers future 2 past 15", GOOD % dated(days)).startswith(reply)


def test_date_is_not_checked_without_a_window(session_factory):
    assert send(session_factory, "headers", GOOD % dated(-400)).startswith("250 ")


def test_only_the_side_given_is_checked(session_factory):
    assert send(session_factory, "headers past 1", GOOD % dated(30)).startswith("250 ")
    assert send(session_factory, "headers future 1", GOOD % dated(-30)).startswith("250 ")


def test_date_without_zone_is_utc(session_factory):
    """A Date with ``-0000`` (no zone known) is read as UTC, not as the server's local time."""
    stamp = (datetime.now(timezone.utc) - timedelta(hours=23)).strftime("%a, %d %b %Y %H:%M:%S -0000")
    assert send(session_factory, "headers past 1", GOOD % stamp).startswith("250 ")


def test_unparseable_date_is_skipped_and_logged(session_factory):
    session = session_factory(["headers past 1 future 1", "rcpt_ok", "queue/discard"], CONFIG)
    logged = session.capture_log()
    replies = session.send_message("a@sender.test", ["u@example.com"], GOOD % "yesterday-ish")
    assert replies[-1].code == 250
    assert any("skip, date not parseable (yesterday-ish)" in line[3] for line in logged)


def test_bad_date_is_reported_before_header_errors(session_factory):
    message = "Subject: a\nSubject: b\nDate: %s\n\nhello\n" % dated(-30)
    assert send(session_factory, "headers past 2", message) == "552 5.6.0 The Date header is too far in the past"


def test_every_problem_costs_karma_and_is_logged(session_factory):
    session = session_factory(["headers", "rcpt_ok", "queue/discard"], CONFIG)
    logged = session.capture_log()
    session.send_message("a@sender.test", ["u@example.com"], "Subject: a\nSubject: b\n\nhello\n")
    assert session.connection.notes["karma"] == -2
    assert any(line[2] == "headers" and line[3] == "fail, We require a valid From header; "
               "Only one Subject header allowed. See RFC 5322, Section 3.6" for line in logged)


def test_reject_type_temp_refuses_with_452(session_factory):
    """qpsmtpd's sample line minus ``reject 0``: a temporary refusal, 4.6.0."""
    assert send(session_factory, "headers reject_type temp require From,Date future 2 past 15",
                "From: a@sender.test\n\nhello\n") == "452 4.6.0 We require a valid Date header"


def test_sample_line_with_reject_0_only_logs(session_factory):
    """qpsmtpd's config.sample line: ``reject 0`` lets the message through and logs the fault."""
    session = session_factory(["headers reject 0 reject_type temp require From,Date future 2 past 15",
                               "rcpt_ok", "queue/discard"], CONFIG)
    logged = session.capture_log()
    replies = session.send_message("a@sender.test", ["u@example.com"], "Subject: hi\n\nhello\n")
    assert replies[-1].code == 250
    assert any(line[3].startswith("fail, tolerated, We require a valid From header") for line in logged)


def test_reject_naughty_stores_the_refusal(session_factory):
    session = session_factory(["headers reject naughty", "rcpt_ok", "queue/discard"], CONFIG)
    replies = session.send_message("a@sender.test", ["u@example.com"], "Subject: hi\n\nhello\n")
    assert replies[-1].code == 250
    assert session.connection.notes["naughty"] == "(headers) 5.6.0 We require a valid From header"


def test_relay_clients_are_not_checked(session_factory):
    """Relay clients (and whitelisted hosts) skip the header checks."""
    session = session_factory(["relay", "headers", "rcpt_ok", "queue/discard"], dict(CONFIG, relayclients=["192.0.2.7"]),
                              remote_ip="192.0.2.7")
    assert session.send_message("a@sender.test", ["u@example.com"], "Subject: hi\n\nhello\n")[-1].code == 250


def test_empty_message_is_refused(session_factory):
    session = session_factory(["headers", "rcpt_ok", "queue/discard"], CONFIG)
    assert str(session.send_message("a@sender.test", ["u@example.com"], b"")[-1]) == \
        "552 5.6.0 You must send some data first"


@pytest.mark.parametrize("line, complaint", [
    ("headers future soon", "future takes a number at least 0, not 'soon'"),
    ("headers past -1", "past takes a number at least 0, not '-1'"),
    ("headers requires From", "did you mean 'require'"),
    ("headers require", "'require' has no value"),
    ("headers reject_type later", "reject_type takes one of"),
])
def test_bad_arguments_stop_start_up(smtpd_factory, line, complaint):
    with pytest.raises(ConfigError, match=complaint):
        smtpd_factory([line, "rcpt_ok"])


def test_live_missing_date_is_refused_over_smtp(live_server, tmp_path):
    """Over a real socket: smtplib sees the 552 5.6.0 refusal and nothing is queued; a good message is."""
    maildir = tmp_path / "Maildir"
    server = live_server(plugins=["headers require From,Date", "rcpt_ok", "queue/maildir %s" % maildir])
    with smtplib.SMTP(*server.address, timeout=10) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("a@sender.test", ["u@example.com"], "From: a@sender.test\r\nSubject: hi\r\n\r\nhello\r\n")
        assert (refused.value.smtp_code, refused.value.smtp_error) == (552, b"5.6.0 We require a valid Date header")
        assert client.sendmail("a@sender.test", ["u@example.com"], GOOD.replace("\n", "\r\n") % dated(0)) == {}
    assert len(list((maildir / "new").iterdir())) == 1
