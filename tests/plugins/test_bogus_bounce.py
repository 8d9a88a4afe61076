"""bogus_bounce: null-sender mail needs one recipient and an empty Return-Path; log, deny or denysoft."""
import smtplib

import pytest

from qpgevent.errors import ConfigError

CONFIG = {"rcpthosts": ["example.com"]}
BOUNCE = "From: MAILER-DAEMON@sender.test\nSubject: Undelivered Mail\n\nsorry\n"
TWO = ["u@example.com", "v@example.com"]
MANY_REPLY = "This bounce message does not have exactly one recipient"
RETURN_PATH_REPLY = "A bounce message must have an empty Return-Path"


def last_reply(session_factory, line, sender, recipients, message=BOUNCE):
    session = session_factory([line, "rcpt_ok", "queue/discard"], CONFIG)
    return str(session.send_message(sender, recipients, message)[-1])


@pytest.mark.parametrize("line", ["bogus_bounce deny", "bogus_bounce action deny", "bogus_bounce reject 1"])
def test_deny_refuses_a_bounce_to_two_recipients(session_factory, line):
    assert last_reply(session_factory, line, "", TWO) == "552 5.7.1 " + MANY_REPLY


def test_denysoft_refuses_temporarily(session_factory):
    assert last_reply(session_factory, "bogus_bounce denysoft", "", TWO) == "452 4.7.1 " + MANY_REPLY


def test_reject_type_wins_over_the_action(session_factory):
    assert last_reply(session_factory, "bogus_bounce deny reject_type temp", "", TWO) == "452 4.7.1 " + MANY_REPLY
    assert last_reply(session_factory, "bogus_bounce denysoft reject 0", "", TWO).startswith("250 ")


@pytest.mark.parametrize("line", ["bogus_bounce", "bogus_bounce log"])
def test_log_is_the_default_and_only_logs(session_factory, line):
    """qpsmtpd's sample ``bogus_bounce log`` (and no argument): the bogus bounce is queued and logged."""
    session = session_factory([line, "rcpt_ok", "queue/discard"], CONFIG)
    logged = session.capture_log()
    assert session.send_message("", TWO, BOUNCE)[-1].code == 250
    assert any(entry[2] == "bogus_bounce" and entry[3] ==
               "fail, tolerated, bogus bounce to 2 recipients: <u@example.com>, <v@example.com>" for entry in logged)


@pytest.mark.parametrize("return_path", ["<someone@sender.test>", "someone@sender.test"])
def test_a_return_path_makes_a_bounce_bogus(session_factory, return_path):
    message = "Return-Path: %s\n%s" % (return_path, BOUNCE)
    assert last_reply(session_factory, "bogus_bounce deny", "", ["u@example.com"], message) == \
        "552 5.7.1 " + RETURN_PATH_REPLY


@pytest.mark.parametrize("message", [BOUNCE, "Return-Path: <>\n" + BOUNCE, "Return-Path: \n" + BOUNCE])
def test_a_real_bounce_passes(session_factory, message):
    assert last_reply(session_factory, "bogus_bounce deny", "", ["u@example.com"], message).startswith("250 ")


def test_ordinary_senders_are_not_checked(session_factory):
    message = "Return-Path: <x@sender.test>\n" + BOUNCE
    assert last_reply(session_factory, "bogus_bounce deny", "a@sender.test", TWO, message).startswith("250 ")


@pytest.mark.parametrize("line, complaint", [
    ("bogus_bounce reject", "'reject' has no value"),
    ("bogus_bounce bounce", "action takes one of log, deny, denysoft, not 'bounce'"),
    ("bogus_bounce action drop", "action takes one of log, deny, denysoft, not 'drop'"),
    ("bogus_bounce deny deny", "'deny' has no value"),
])
def test_bad_arguments_stop_start_up(smtpd_factory, line, complaint):
    with pytest.raises(ConfigError, match=complaint):
        smtpd_factory([line, "rcpt_ok"])


def test_live_bogus_bounce_is_refused(live_server, tmp_path):
    """Over a real socket: a null-sender message to two recipients gets 552 5.7.1; one to one is queued."""
    maildir = tmp_path / "Maildir"
    server = live_server(plugins=["bogus_bounce deny", "rcpt_ok", "queue/maildir %s" % maildir])
    with smtplib.SMTP(*server.address, timeout=10) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("<>", TWO, BOUNCE.replace("\n", "\r\n"))
        assert (refused.value.smtp_code, refused.value.smtp_error) == (552, ("5.7.1 " + MANY_REPLY).encode())
        assert client.sendmail("<>", ["u@example.com"], BOUNCE.replace("\n", "\r\n")) == {}
    assert len(list((maildir / "new").iterdir())) == 1
